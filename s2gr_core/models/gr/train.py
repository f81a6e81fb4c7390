"""Training and inference of TIGER / S2GR on SIDs: AdamW with warm-up and cosine decay,
early stopping on validation NDCG@10 through the shared epoch loop (checkpoint, resume)."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from s2gr_core.config import GRConfig, S2GRConfig
from s2gr_core.evaluation.metrics import mean_metrics, per_user_metrics, target_ranks
from s2gr_core.models.common import resolve_device, seed_everything, set_threads
from s2gr_core.models.gr.beam import DecodingTables
from s2gr_core.models.gr.data import left_padded, sid_tensor, training_examples
from s2gr_core.models.gr.decoding import recommend
from s2gr_core.models.gr.losses import LossWeights, training_loss
from s2gr_core.models.gr.model import GRSpec, SeqToSID
from s2gr_core.models.training import NOT_FINGERPRINTED, EpochResult, LogFn, TrainOutcome, fit, stop_metric_for


@dataclass(slots=True)
class Semantic:
    """What the sids stage provides: SIDs (N, P), decoding tables, code clusters (s2gr targets)."""

    sids: np.ndarray
    tables: DecodingTables
    centroids: torch.Tensor  # (L, K_c, C)
    cluster_of_code: torch.Tensor  # (L, K)


def build_spec(cfg: GRConfig, mode: Literal["tiger", "s2gr"], sem: Semantic, max_history: int) -> GRSpec:
    return GRSpec(
        vocab=tuple(int(v) for v in sem.sids.max(axis=0) + 1),
        max_history=max_history,
        d_model=cfg.d_model,
        heads=cfg.heads,
        head_dim=cfg.head_dim,
        ffn=cfg.ffn,
        encoder_layers=cfg.encoder_layers,
        decoder_layers=cfg.decoder_layers,
        dropout=cfg.dropout,
        mode=mode,
        merge_codes=cfg.merge_codes,
        user_buckets=cfg.user_buckets,
        reasoning_first=isinstance(cfg, S2GRConfig) and cfg.reasoning_first,
        cluster_dim=int(sem.centroids.shape[-1]),
    )


def loss_weights(cfg: GRConfig) -> LossWeights:
    if isinstance(cfg, S2GRConfig):
        return LossWeights(cfg.tau, cfg.align_weight, cfg.interest_weight, cfg.reg_weight)
    return LossWeights(1.0, 0.0, 0.0, 0.0)


@torch.no_grad()
def predict(
    model: SeqToSID,
    histories: list[np.ndarray],
    users: np.ndarray,
    sem: Semantic,
    beam: int,
    top_k: int,
    batch_size: int,
    device: torch.device,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``top_k`` items (U, K) and their SID log-probabilities by constrained beam search."""
    items_out, scores_out = [], []
    padded = left_padded(histories, model.spec.max_history)
    for start in range(0, len(padded), batch_size):
        hist = sid_tensor(padded[start : start + batch_size], sem.sids, device)
        user = torch.as_tensor(users[start : start + batch_size], device=device) if model.user is not None else None
        items, scores = recommend(model, hist, sem.tables, beam, user)
        items_out.append(items[:, :top_k].cpu().numpy())
        scores_out.append(scores[:, :top_k].float().cpu().numpy())
    return np.concatenate(items_out), np.concatenate(scores_out)


def fingerprint(cfg: GRConfig, mode: str, sem: Semantic, max_history: int, sequences: list[np.ndarray]) -> str:
    identity = {k: v for k, v in asdict(cfg).items() if k not in NOT_FINGERPRINTED}
    digest = hashlib.sha256(json.dumps([identity, mode, max_history], sort_keys=True).encode())
    digest.update(sem.sids.tobytes())
    for seq in sequences:
        digest.update(np.asarray(seq, dtype=np.int64).tobytes() + b"|")
    return digest.hexdigest()[:16]


def train_gr(
    cfg: GRConfig,
    mode: Literal["tiger", "s2gr"],
    sem: Semantic,
    train_users: np.ndarray,
    sequences: list[np.ndarray],
    valid: tuple[np.ndarray, list[np.ndarray], np.ndarray],
    max_history: int,
    ckpt_dir: Path,
    ks: tuple[int, ...],
    inference_batch: int,
    log: LogFn | None = None,
    progress: bool = True,
) -> TrainOutcome:
    set_threads(cfg.threads)
    device = resolve_device(cfg.device)
    sem = replace(sem, tables=sem.tables.to(device))  # validation decodes on the model's device
    stop_metric = stop_metric_for(ks)
    history, targets = training_examples(sequences, max_history)
    example_users = np.repeat(train_users, [max(len(s) - 1, 0) for s in sequences])
    seed_everything(cfg.seed)
    model = SeqToSID(build_spec(cfg, mode, sem, max_history)).to(device)
    optim = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total_steps = cfg.max_epochs * math.ceil(len(targets) / cfg.batch_size)

    def schedule(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress_ = (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress_)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optim, schedule)
    weights = loss_weights(cfg)
    centroids, clusters = sem.centroids.to(device), sem.cluster_of_code.to(device)

    def train_epoch(epoch: int, rng: np.random.Generator) -> EpochResult:
        order = rng.permutation(len(targets))
        sums: dict[str, float] = {}
        bar = tqdm(
            range(0, len(order), cfg.batch_size),
            desc=f"{mode} epoch {epoch}",
            leave=False,
            mininterval=1.0,
            disable=None if progress else True,
        )
        for b, start in enumerate(bar):
            idx = order[start : start + cfg.batch_size]
            hist = sid_tensor(history[idx], sem.sids, device)
            target = torch.as_tensor(sem.sids[targets[idx]], device=device)
            users = torch.as_tensor(example_users[idx], device=device) if cfg.user_buckets else None
            terms = training_loss(model, hist, target, weights, centroids, clusters, users)
            optim.zero_grad(set_to_none=True)
            terms["loss"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optim.step()
            scheduler.step()
            for key, value in terms.items():
                sums[key] = sums.get(key, 0.0) + value.item() * len(idx)
            if b % 20 == 0:
                bar.set_postfix(loss=f"{sums['loss'] / (start + len(idx)):.4f}")
        return EpochResult({k: v / len(order) for k, v in sums.items()}, len(order))

    valid_users, valid_hist, valid_targets = valid

    def validate() -> dict[str, float]:
        items, _ = predict(model, valid_hist, valid_users, sem, cfg.beam, max(ks), inference_batch, device)
        return mean_metrics(per_user_metrics(target_ranks(items, valid_targets), ks))

    return fit(
        model,
        {"optim": optim, "scheduler": scheduler},
        train_epoch,
        validate,
        ckpt_dir=ckpt_dir,
        fingerprint=fingerprint(cfg, mode, sem, max_history, sequences),
        max_epochs=cfg.max_epochs,
        patience=cfg.patience,
        seed=cfg.seed,
        stop_metric=stop_metric,
        best_extra={"spec": asdict(model.spec), "config": asdict(cfg)},
        device=device,
        log=log,
    )


def load_model(path: Path, device: str | torch.device = "cpu") -> SeqToSID:
    """Rebuild a trained model from ``best.pt``."""
    state = torch.load(path, map_location=device, weights_only=False)
    spec = state["spec"]
    model = SeqToSID(GRSpec(**{**spec, "vocab": tuple(spec["vocab"])}))
    model.load_state_dict(state["model"])
    return model.to(device).eval()
