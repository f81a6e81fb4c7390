"""SASRec training: full softmax cross-entropy; the epoch loop (early stopping on validation
NDCG@10, ``last.pt`` every epoch, resume) is :func:`s2gr_core.models.training.fit`."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from s2gr_core.config import SASRecConfig
from s2gr_core.evaluation.metrics import mean_metrics, per_user_metrics, target_ranks
from s2gr_core.models.common import pad_right, resolve_device, seed_everything, set_threads, top_k_items
from s2gr_core.models.sasrec.data import IGNORE, length_bucketed_batches, training_windows
from s2gr_core.models.sasrec.model import SASRec
from s2gr_core.models.training import NOT_FINGERPRINTED, EpochResult, LogFn, TrainOutcome, fit, stop_metric_for


def fingerprint(cfg: SASRecConfig, n_items: int, max_len: int, sequences: list[np.ndarray]) -> str:
    """Identity of a training run: model/optimiser config and data, not the epoch budget."""
    identity = {k: v for k, v in asdict(cfg).items() if k not in NOT_FINGERPRINTED}
    digest = hashlib.sha256(json.dumps([identity, n_items, max_len], sort_keys=True).encode())
    for seq in sequences:
        digest.update(np.asarray(seq, dtype=np.int64).tobytes() + b"|")
    return digest.hexdigest()[:16]


@torch.no_grad()
def predict(
    model: SASRec,
    histories: list[np.ndarray],
    top_k: int,
    exclude_history: bool,
    batch_size: int,
    device: torch.device,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``top_k`` items (U, K) and scores for each history, full ranking over the catalogue."""
    model.eval()
    items_out, scores_out = [], []
    for start in range(0, len(histories), batch_size):
        chunk = histories[start : start + batch_size]
        tokens, lengths = pad_right(chunk, model.max_len)
        tok = torch.from_numpy(tokens).to(device)
        scores = model.scores(model.last_hidden(tok, torch.from_numpy(lengths).to(device)))
        exclude = (tok - 1) if exclude_history else None  # padding becomes -1 = nothing
        items, top = top_k_items(scores, top_k, exclude)
        items_out.append(items.cpu().numpy())
        scores_out.append(top.float().cpu().numpy())
    return np.concatenate(items_out), np.concatenate(scores_out)


def validation_metrics(
    model: SASRec,
    histories: list[np.ndarray],
    targets: np.ndarray,
    ks: tuple[int, ...],
    batch_size: int,
    device: torch.device,
    exclude_history: bool,
) -> dict[str, float]:
    items, _ = predict(model, histories, max(ks), exclude_history, batch_size, device)
    return mean_metrics(per_user_metrics(target_ranks(items, targets), ks))


def load_model(path: Path, device: str | torch.device = "cpu") -> SASRec:
    """Rebuild a trained SASRec from ``best.pt``."""
    state = torch.load(path, map_location=device, weights_only=False)
    model = SASRec(state["n_items"], state["max_len"], SASRecConfig(**state["config"]))
    model.load_state_dict(state["model"])
    return model.to(device).eval()


def train_sasrec(
    cfg: SASRecConfig,
    train_sequences: list[np.ndarray],
    valid_histories: list[np.ndarray],
    valid_targets: np.ndarray,
    n_items: int,
    max_len: int,
    ckpt_dir: Path,
    ks: tuple[int, ...],
    inference_batch: int,
    exclude_history: bool = False,
    log: LogFn | None = None,
    progress: bool = True,
) -> TrainOutcome:
    set_threads(cfg.threads)
    device = resolve_device(cfg.device)
    stop_metric = stop_metric_for(ks)
    inputs, targets = training_windows(train_sequences, max_len)
    lengths = (inputs != 0).sum(axis=1)
    n_targets = int((targets != IGNORE).sum())
    fp = fingerprint(cfg, n_items, max_len, train_sequences)

    seed_everything(cfg.seed)
    model = SASRec(n_items, max_len, cfg).to(device)
    optim = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def train_epoch(epoch: int, rng: np.random.Generator) -> EpochResult:
        batches = length_bucketed_batches(inputs, cfg.batch_size, rng)
        total, count = 0.0, 0
        bar = tqdm(
            batches, desc=f"epoch {epoch}", leave=False, mininterval=1.0, disable=None if progress else True
        )  # None: shown on a terminal only
        for b, idx in enumerate(bar):
            width = int(lengths[idx].max())  # right padding: columns past the longest window are empty
            x = torch.from_numpy(inputs[idx, :width]).to(device)
            y = torch.from_numpy(targets[idx, :width]).to(device)
            counted = y != IGNORE
            # Full softmax only where a target is counted: most positions of short sequences are
            # padding, and the (positions x catalogue) output layer dominates the cost.
            logits = model.scores(model(x)[counted])
            loss = F.cross_entropy(logits, y[counted])
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
            if b % 20 == 0:
                bar.set_postfix(loss=f"{total / count:.4f}")
        return EpochResult({"loss": total / max(count, 1)}, n_targets)

    return fit(
        model,
        {"optim": optim},
        train_epoch,
        lambda: validation_metrics(model, valid_histories, valid_targets, ks, inference_batch, device, exclude_history),
        ckpt_dir=ckpt_dir,
        fingerprint=fp,
        max_epochs=cfg.max_epochs,
        patience=cfg.patience,
        seed=cfg.seed,
        stop_metric=stop_metric,
        best_extra={"config": asdict(cfg), "n_items": n_items, "max_len": max_len},
        device=device,
        log=log,
    )
