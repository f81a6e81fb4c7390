"""SASRec training: full softmax cross-entropy; the epoch loop (early stopping on validation
NDCG@10, ``last.pt`` every epoch, resume) is :func:`s2gr_core.models.training.fit`."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from s2gr_core.config import SASRecConfig
from s2gr_core.evaluation.metrics import mean_metrics, per_user_metrics, target_ranks
from s2gr_core.io import load_torch
from s2gr_core.models.common import (
    crop_width,
    decode_chunks,
    epoch_batches,
    pad_right,
    seed_everything,
    top_k_items,
)
from s2gr_core.models.runtime import Runtime, run_guarded, runtime_for
from s2gr_core.models.sasrec.data import IGNORE, training_windows
from s2gr_core.models.sasrec.model import SASRec
from s2gr_core.models.training import (
    NOT_FINGERPRINTED,
    EpochResult,
    LogFn,
    TrainOutcome,
    fit,
    run_batches,
    stop_metric_for,
)


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
    runtime: Runtime | None = None,
    length_buckets: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``top_k`` items (U, K) and scores for each history, full ranking over the catalogue, in user order.

    With ``length_buckets`` histories are scored shortest first, each chunk cropped to its longest
    (right padding under a causal mask: the cropped columns were never attended to).
    """
    model.eval()
    tokens, lengths = pad_right(histories, model.max_len)
    items_out = np.zeros((len(histories), top_k), dtype=np.int64)
    scores_out = np.zeros((len(histories), top_k), dtype=np.float32)
    multiple = runtime.crop_multiple if runtime is not None else 1
    for rows in decode_chunks(lengths, batch_size, length_buckets):
        width = crop_width(int(lengths[rows].max()), model.max_len, multiple) if length_buckets else model.max_len
        tok = torch.from_numpy(tokens[rows, :width]).to(device)
        with runtime.autocast() if runtime is not None else contextlib.nullcontext():
            scores = model.scores(model.last_hidden(tok, torch.from_numpy(lengths[rows]).to(device))).float()
        exclude = (tok - 1) if exclude_history else None  # padding becomes -1 = nothing
        items, top = top_k_items(scores, top_k, exclude)
        items_out[rows] = items.cpu().numpy()
        scores_out[rows] = top.cpu().numpy()
    return items_out, scores_out


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
    state = load_torch(path, device)
    model = SASRec(state["n_items"], state["max_len"], SASRecConfig(**state["config"]))
    model.load_state_dict(state["model"])
    return model.to(device).eval()


class Objective(nn.Module):
    """Full-softmax cross-entropy of a batch's counted positions, as a module's forward (what DDP
    wraps). The softmax runs only where a target is counted: most positions of short windows are
    padding, and the (positions × catalogue) output layer dominates the cost."""

    def __init__(self, model: SASRec, runtime: Runtime, encode: Callable[[torch.Tensor], torch.Tensor] | None = None):
        super().__init__()
        self.model, self.runtime, self.encode = model, runtime, encode  # encode: the compiled encoder

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"loss"}`` of inputs ``x`` and targets ``y``, both (B, W)."""
        counted = y != IGNORE
        with self.runtime.autocast():
            logits = self.model.scores((self.model if self.encode is None else self.encode)(x)[counted])
        return {"loss": F.cross_entropy(logits.float(), y[counted])}


class SASRecTrainer:
    """SASRec's training loop, one epoch at a time: the pipeline's and the benchmark's.

    Windows live on the device; batches group windows of similar length (right padding: each is
    cropped to its longest window) unless ``length_buckets`` is off; the loss is :class:`Objective`.
    """

    def __init__(
        self, cfg: SASRecConfig, train_sequences: list[np.ndarray], n_items: int, max_len: int, runtime: Runtime
    ):
        self.cfg, self.runtime = cfg, runtime
        inputs, targets = training_windows(train_sequences, max_len)
        self.lengths = (inputs != 0).sum(axis=1)
        self.counted = (targets != IGNORE).sum(axis=1)
        self.inputs = torch.from_numpy(inputs).to(runtime.device)
        self.targets = torch.from_numpy(targets).to(runtime.device)
        seed_everything(cfg.seed)
        self.model = SASRec(n_items, max_len, cfg).to(runtime.device)
        self.optim = runtime.adamw(self.model.parameters(), cfg.lr, cfg.weight_decay)
        self.compiled = runtime.step(self.model, "sasrec encoder")
        self.objective = runtime.world.wrap(Objective(self.model, runtime, self.compiled), runtime.device)
        self.losses = self.objective  # a batch's loss terms, as GRTrainer.losses gives them

    @property
    def n_targets(self) -> int:
        return int(self.counted.sum())

    def batch(self, idx: np.ndarray, crop: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets), both (B, W), of the windows ``idx`` on the device; W is the longest
        window when cropping (default: ``length_buckets``)."""
        width = self.inputs.shape[1]
        if self.cfg.length_buckets if crop is None else crop:
            width = crop_width(int(self.lengths[idx].max()), width, self.runtime.crop_multiple)
        rows = torch.as_tensor(idx, device=self.runtime.device)
        return self.inputs[rows, :width], self.targets[rows, :width]

    def batches(self, rng: np.random.Generator) -> list[np.ndarray]:
        """One epoch's batches of window indices, drawn from ``rng``."""
        return epoch_batches(self.lengths, self.cfg.batch_size, rng, self.cfg.length_buckets, self.runtime.compile)

    def step(self, idx: np.ndarray) -> dict[str, torch.Tensor]:
        """One optimiser step on the windows ``idx`` (this rank's share of them, with several ranks)."""
        world = self.runtime.world
        share = world.shard(idx)
        x, y = self.batch(share)

        def body() -> torch.Tensor:
            loss = self.objective(x, y)["loss"]
            self.optim.zero_grad(set_to_none=True)
            # a mean over counted targets: weigh this rank's share of them
            world.scale(loss, self.counted[share].sum(), self.counted[idx].sum()).backward()
            return loss

        loss = run_guarded(self.compiled, body)
        self.optim.step()
        return {"loss": loss}

    def epoch(
        self, epoch: int, rng: np.random.Generator, max_batches: int | None = None, progress: bool = True
    ) -> EpochResult:
        count = lambda idx: int(self.counted[idx].sum())  # noqa: E731
        batches = self.batches(rng)[:max_batches]
        return run_batches(batches, self.step, count, f"epoch {epoch}", progress, world=self.runtime.world)


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
    resume_dir: Path | None = None,
) -> TrainOutcome:
    runtime = runtime_for(cfg.device, cfg.threads, cfg.precision, cfg.compile)
    trainer = SASRecTrainer(cfg, train_sequences, n_items, max_len, runtime)
    model = trainer.model

    def validate() -> dict[str, float]:
        items, _ = predict(
            model, valid_histories, max(ks), exclude_history, inference_batch, runtime.device, runtime,
            cfg.length_buckets,
        )  # fmt: skip
        return mean_metrics(per_user_metrics(target_ranks(items, valid_targets), ks))

    outcome = fit(
        model,
        {"optim": trainer.optim},
        lambda epoch, rng: trainer.epoch(epoch, rng, progress=progress),
        validate,
        ckpt_dir=ckpt_dir,
        resume_dir=resume_dir,
        fingerprint=fingerprint(cfg, n_items, max_len, train_sequences),
        max_epochs=cfg.max_epochs,
        patience=cfg.patience,
        seed=cfg.seed,
        stop_metric=stop_metric_for(ks),
        best_extra={"config": asdict(cfg), "n_items": n_items, "max_len": max_len},
        device=runtime.device,
        log=log,
        world=runtime.world,
    )
    outcome.runtime = runtime
    return outcome
