"""SASRec training: full softmax cross-entropy, early stopping, checkpoint every epoch, resume.

Checkpoints in ``ckpt_dir``: ``last.pt`` (everything needed to resume: model,
optimiser, epoch, early-stopping state, RNG states, a fingerprint of config and
data) and ``best.pt`` (the weights with the best validation NDCG@10). A run that
is interrupted resumes from ``last.pt`` when the fingerprint still matches and
training had not finished; otherwise it starts afresh.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from s2gr_core.config import SASRecConfig
from s2gr_core.evaluation.metrics import mean_metrics, per_user_metrics, target_ranks
from s2gr_core.io import atomic_path
from s2gr_core.models.common import pad_right, peak_memory_mb, resolve_device, seed_everything, set_threads, top_k_items
from s2gr_core.models.sasrec.data import IGNORE, length_bucketed_batches, training_windows
from s2gr_core.models.sasrec.model import SASRec

LogFn = Callable[[dict[str, float], int], None]


@dataclass(slots=True)
class TrainOutcome:
    model: SASRec
    best_epoch: int
    epochs_run: int
    best_valid: dict[str, float]
    seconds_per_epoch: float
    samples_per_second: float
    peak_memory_mb: float
    resumed_from: int | None
    device: str
    history: list[dict[str, float]] = field(default_factory=list)


# Budget and placement do not change what an epoch computes: a run may resume under a new budget.
NOT_FINGERPRINTED = ("max_epochs", "patience", "device", "threads")


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


def _save(obj: object, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


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
    stop_metric = f"ndcg_at_{10 if 10 in ks else max(ks)}"
    inputs, targets = training_windows(train_sequences, max_len)
    lengths = (inputs != 0).sum(axis=1)
    n_targets = int((targets != IGNORE).sum())
    fp = fingerprint(cfg, n_items, max_len, train_sequences)

    seed_everything(cfg.seed)
    model = SASRec(n_items, max_len, cfg).to(device)
    optim = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(cfg.seed)
    start_epoch, best, best_epoch, bad_epochs, history, resumed = 1, -1.0, 0, 0, [], None
    last_path, best_path = ckpt_dir / "last.pt", ckpt_dir / "best.pt"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    if last_path.is_file():
        state = torch.load(last_path, map_location=device, weights_only=False)
        if state.get("fingerprint") == fp and not state.get("finished"):
            model.load_state_dict(state["model"])
            optim.load_state_dict(state["optim"])
            rng.bit_generator.state = state["numpy_rng"]
            torch.set_rng_state(state["torch_rng"])
            start_epoch, best, best_epoch = state["epoch"] + 1, state["best"], state["best_epoch"]
            bad_epochs, history, resumed = state["bad_epochs"], state["history"], state["epoch"]
            print(f"resuming from epoch {state['epoch']} checkpoint (best {stop_metric} {best:.4f})", flush=True)

    epoch_times: list[float] = []
    for epoch in range(start_epoch, cfg.max_epochs + 1):
        if bad_epochs >= cfg.patience:
            break
        model.train()
        started = time.time()
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
        train_seconds = time.time() - started
        valid = validation_metrics(model, valid_histories, valid_targets, ks, inference_batch, device, exclude_history)
        epoch_times.append(time.time() - started)
        improved = valid[stop_metric] > best
        if improved:
            best, best_epoch, bad_epochs = valid[stop_metric], epoch, 0
            _save(
                {
                    "model": model.state_dict(),
                    "config": asdict(cfg),
                    "n_items": n_items,
                    "max_len": max_len,
                    "epoch": epoch,
                    "valid": valid,
                },
                best_path,
            )
        else:
            bad_epochs += 1
        row = {
            "epoch": epoch,
            "train_loss": total / max(count, 1),
            "epoch_seconds": epoch_times[-1],
            "train_samples_per_s": n_targets / max(train_seconds, 1e-9),
            **{f"valid_{k}": v for k, v in valid.items()},
        }
        history.append(row)
        if log is not None:
            log({k: v for k, v in row.items() if k != "epoch"}, epoch)
        print(
            f"epoch {epoch:3d}  loss {row['train_loss']:.4f}  valid {stop_metric} {valid[stop_metric]:.4f}"
            f"{'  *' if improved else ''}  ({epoch_times[-1]:.1f}s)",
            flush=True,
        )
        _save(
            {
                "model": model.state_dict(),
                "optim": optim.state_dict(),
                "epoch": epoch,
                "best": best,
                "best_epoch": best_epoch,
                "bad_epochs": bad_epochs,
                "history": history,
                "fingerprint": fp,
                "numpy_rng": rng.bit_generator.state,
                "torch_rng": torch.get_rng_state(),
                "finished": False,
            },
            last_path,
        )

    if not best_path.is_file():
        raise RuntimeError(f"{ckpt_dir}: no best checkpoint was written (max_epochs={cfg.max_epochs})")
    final = torch.load(last_path, map_location=device, weights_only=False)
    final["finished"] = True
    _save(final, last_path)
    best_state = torch.load(best_path, map_location=device, weights_only=False)
    model.load_state_dict(best_state["model"])
    model.eval()
    return TrainOutcome(
        model=model,
        best_epoch=best_epoch,
        epochs_run=int(history[-1]["epoch"]) if history else 0,
        best_valid=best_state["valid"],
        seconds_per_epoch=float(np.mean(epoch_times)) if epoch_times else 0.0,
        samples_per_second=n_targets / float(np.mean(epoch_times)) if epoch_times else 0.0,
        peak_memory_mb=peak_memory_mb(device),
        resumed_from=resumed,
        device=str(device),
        history=history,
    )
