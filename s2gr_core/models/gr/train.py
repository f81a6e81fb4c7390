"""Training and inference of TIGER / S2GR on SIDs: fused AdamW with warm-up and cosine decay,
length-bucketed batches, early stopping on validation NDCG@10 through the shared epoch loop (checkpoint, resume)."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from s2gr_core.config import GRConfig, S2GRConfig
from s2gr_core.evaluation.metrics import mean_metrics, per_user_metrics, target_ranks
from s2gr_core.io import load_torch
from s2gr_core.models.common import crop_width, epoch_batches, seed_everything
from s2gr_core.models.gr.beam import DecodingTables
from s2gr_core.models.gr.data import eval_batches, sid_table, training_examples
from s2gr_core.models.gr.decoding import Decoder
from s2gr_core.models.gr.diagnostics import validation_signals
from s2gr_core.models.gr.losses import GlobalBatch, LossWeights, Objective
from s2gr_core.models.gr.model import GRSpec, SeqToSID
from s2gr_core.models.runtime import Runtime, run_guarded, runtime_for
from s2gr_core.models.training import (
    NOT_FINGERPRINTED,
    EpochResult,
    LogFn,
    TrainOutcome,
    fit,
    run_batches,
    stop_metric_for,
)


@dataclass(slots=True)
class Semantic:
    """What the sids stage provides: SIDs (N, P), decoding tables, code clusters (s2gr targets)."""

    sids: np.ndarray
    tables: DecodingTables
    centroids: torch.Tensor  # (L, K_c, C)
    cluster_of_code: torch.Tensor  # (L, K)


CHAIN_FIELDS = (
    "reasoning_first",
    "level_pos_init",
    "thought_position",
    "thought_dropout",
    "thought_detach",
    "thought_source",
    "thought_norm",
)


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
        cluster_dim=int(sem.centroids.shape[-1]),
        **({name: getattr(cfg, name) for name in CHAIN_FIELDS} if isinstance(cfg, S2GRConfig) else {}),
    )


def loss_weights(cfg: GRConfig) -> LossWeights:
    if isinstance(cfg, S2GRConfig):
        return LossWeights(
            cfg.tau,
            cfg.align_weight,
            cfg.interest_weight,
            cfg.reg_weight,
            rec_reduction=cfg.rec_reduction,
            align_tau=cfg.align_tau,
            align_levels=cfg.align_level_weights,
            align_space=cfg.align_space,
            interest_target=cfg.interest_target,
            interest_detach=cfg.interest_detach,
        )
    return LossWeights(1.0, 0.0, 0.0, 0.0, rec_reduction=cfg.rec_reduction)


AUXILIARY = ("align", "interest", "interest_query", "interest_norm")  # S2GR's heads beside the trunk
NO_DECAY = ("bos", "interest_query", "level_pos")  # free vectors: decay would pull them to 0


def param_groups(model: SeqToSID, weight_decay: float, which: str) -> list[dict]:
    """AdamW groups: with ``which='weights'`` only matrices of linear layers decay; norms, biases,
    embedding tables and the free vectors in NO_DECAY do not. ``'all'`` decays everything."""
    if which == "all":
        return [{"params": list(model.parameters()), "weight_decay": weight_decay}]
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    decay, rest = [], []
    for name, param in model.named_parameters():
        free = param.ndim < 2 or id(param) in embeddings or name.split(".")[0] in NO_DECAY
        (rest if free else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def clip_groups(model: SeqToSID, scope: str) -> list[list[torch.nn.Parameter]]:
    """Parameter sets clipped together: one (global), or the trunk and each auxiliary head (per_module)."""
    if scope == "global":
        return [list(model.parameters())]
    groups: dict[str, list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        top = name.split(".")[0]
        groups.setdefault(top if top in AUXILIARY else "trunk", []).append(param)
    return list(groups.values())


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up to 1, then cosine decay to 0 at ``total_steps``, 0 after.

    >>> [round(lr_factor(s, 2, 6), 2) for s in range(8)]
    [0.5, 1.0, 1.0, 0.85, 0.5, 0.15, 0.0, 0.0]
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress_ = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress_)))


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
    runtime: Runtime | None = None,
    length_buckets: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``top_k`` items (U, K) and their SID log-probabilities by constrained beam search, in user order.

    With ``length_buckets`` users are decoded shortest history first, each chunk cropped to its
    longest history (position ids count from the right, so the lists are those of the padded batch).
    """
    tables = sem.tables.to(device)  # the search runs where the model is (a no-op when already there)
    multiple = runtime.crop_multiple if runtime is not None else 1
    items_out = np.zeros((len(histories), top_k), dtype=np.int64)
    scores_out = np.zeros((len(histories), top_k), dtype=np.float32)
    sids = sid_table(sem.sids, device)
    decoder = Decoder(model, runtime)
    chunks = eval_batches(
        histories, users, sids, model.spec.max_history, batch_size, device, multiple, length_buckets,
        with_users=model.user is not None,
    )  # fmt: skip
    for rows, hist, user in chunks:
        items, scores = decoder(hist, tables, beam, user)
        items_out[rows] = items[:, :top_k].cpu().numpy()
        scores_out[rows] = scores[:, :top_k].float().cpu().numpy()
    return items_out, scores_out


def fingerprint(cfg: GRConfig, mode: str, sem: Semantic, max_history: int, sequences: list[np.ndarray]) -> str:
    identity = {k: v for k, v in asdict(cfg).items() if k not in NOT_FINGERPRINTED}
    digest = hashlib.sha256(json.dumps([identity, mode, max_history], sort_keys=True).encode())
    digest.update(sem.sids.tobytes())
    for seq in sequences:
        digest.update(np.asarray(seq, dtype=np.int64).tobytes() + b"|")
    return digest.hexdigest()[:16]


class GRTrainer:
    """The training loop of TIGER / S2GR, one epoch at a time: the pipeline's and the benchmark's.

    Examples and SIDs live on the device; a batch is gathered there, cropped to its longest
    history when ``length_buckets`` is on, run under the runtime's precision (and compiled step),
    clipped to norm 1, stepped by fused AdamW and the warm-up + cosine schedule. Loss terms are
    summed on the device and read every ``log_every`` batches (the progress bar) and at the end.
    A compiled run leaves out the epoch's one partial batch (see :func:`epoch_batches`).
    """

    def __init__(
        self,
        cfg: GRConfig,
        mode: Literal["tiger", "s2gr"],
        sem: Semantic,
        train_users: np.ndarray,
        sequences: list[np.ndarray],
        max_history: int,
        runtime: Runtime,
        log_every: int = 20,
    ):
        self.cfg, self.mode, self.runtime, self.log_every = cfg, mode, runtime, log_every
        device = runtime.device
        history, targets = training_examples(sequences, max_history)
        self.lengths = (history >= 0).sum(axis=1)
        self.history = torch.as_tensor(history + 1, device=device)  # +1: row 0 of the SID table is padding
        self.targets = torch.as_tensor(targets, device=device)
        self.users = torch.as_tensor(np.repeat(train_users, [max(len(s) - 1, 0) for s in sequences]), device=device)
        self.sids = sid_table(sem.sids, device)
        seed_everything(cfg.seed)
        self.model = SeqToSID(build_spec(cfg, mode, sem, max_history)).to(device)
        self.optim = runtime.adamw(param_groups(self.model, cfg.weight_decay, cfg.decay_groups), cfg.lr)
        self.clip = clip_groups(self.model, cfg.clip_scope)
        total_steps = (cfg.schedule_epochs or cfg.max_epochs) * math.ceil(len(targets) / cfg.batch_size)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optim, partial(lr_factor, warmup_steps=cfg.warmup_steps, total_steps=total_steps)
        )
        self.weights = loss_weights(cfg)
        objective = Objective(self.model, self.weights, sem.centroids.to(device), sem.cluster_of_code.to(device))
        self.objective = runtime.world.wrap(objective, device)

        def losses(
            hist: torch.Tensor, target: torch.Tensor, users: torch.Tensor | None, batch: GlobalBatch | None = None
        ) -> dict[str, torch.Tensor]:
            with runtime.autocast():
                return self.objective(hist, target, users, batch)

        self.losses = losses
        self.compiled = runtime.step(losses, f"{mode} training step")

    @property
    def examples(self) -> int:
        return len(self.targets)

    def batches(self, rng: np.random.Generator) -> list[np.ndarray]:
        return epoch_batches(self.lengths, self.cfg.batch_size, rng, self.cfg.length_buckets, self.runtime.compile)

    def batch(self, idx: np.ndarray, crop: bool | None = None) -> tuple[torch.Tensor, ...]:
        """(history (B, H', P), target (B, P), users (B,) or None) of the examples ``idx``, gathered on
        the device; H' is the batch's longest history when cropping (default: ``length_buckets``)."""
        width = self.history.shape[1]
        if self.cfg.length_buckets if crop is None else crop:
            width = crop_width(int(self.lengths[idx].max()), width, self.runtime.crop_multiple)
        rows = torch.as_tensor(idx, device=self.runtime.device)
        hist = self.sids[self.history[rows, self.history.shape[1] - width :]]
        return hist, self.sids[self.targets[rows] + 1], self.users[rows] if self.cfg.user_buckets else None

    def step(self, idx: np.ndarray) -> dict[str, torch.Tensor]:
        """One optimiser step on the examples ``idx`` (this rank's share of them, with several
        ranks); the loss terms (of the share) stay on the device."""
        device, world = self.runtime.device, self.runtime.world
        share = world.shard(idx)
        hist, target, users = self.batch(share)
        whole = None  # one process: the batch is its own pool of in-batch negatives
        if world.size > 1:
            whole = (self.sids[self.targets[torch.as_tensor(idx, device=device)] + 1], world.rows(len(idx), device))
        losses = self.compiled if self.compiled is not None else self.losses

        def body() -> dict[str, torch.Tensor]:
            if self.compiled is not None and device.type == "cuda":
                torch.compiler.cudagraph_mark_step_begin()  # a new iteration: earlier outputs may be reused
            terms = losses(hist, target, users, whole)
            self.optim.zero_grad(set_to_none=True)
            world.scale(terms["loss"], len(share), len(idx)).backward()
            return terms

        terms = run_guarded(self.compiled, body)
        if self.cfg.clip_norm > 0:
            for params in self.clip:
                torch.nn.utils.clip_grad_norm_(params, self.cfg.clip_norm)
        self.optim.step()
        self.scheduler.step()
        return terms

    def epoch(
        self, epoch: int, rng: np.random.Generator, max_batches: int | None = None, progress: bool = True
    ) -> EpochResult:
        """One pass over the training examples (the first ``max_batches`` batches when given)."""
        batches = self.batches(rng)[:max_batches]
        desc = f"{self.mode} epoch {epoch}"
        return run_batches(batches, self.step, len, desc, progress, self.log_every, self.runtime.world)


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
    resume_dir: Path | None = None,
) -> TrainOutcome:
    runtime = runtime_for(cfg.device, cfg.threads, cfg.precision, cfg.compile)
    stop_metric = stop_metric_for(ks)
    trainer = GRTrainer(cfg, mode, sem, train_users, sequences, max_history, runtime)
    model = trainer.model
    valid_users, valid_hist, valid_targets = valid

    def validate() -> dict[str, float]:
        items, _ = predict(
            model, valid_hist, valid_users, sem, cfg.beam, max(ks), inference_batch, runtime.device, runtime,
            cfg.length_buckets,
        )  # fmt: skip
        ranking = mean_metrics(per_user_metrics(target_ranks(items, valid_targets), ks))
        signals = validation_signals(
            model, valid_hist, valid_users, valid_targets, sem.sids, trainer.weights, sem.centroids,
            sem.cluster_of_code, inference_batch, runtime.crop_multiple, cfg.length_buckets,
        )  # fmt: skip
        return {**ranking, **signals}

    outcome = fit(
        model,
        {"optim": trainer.optim, "scheduler": trainer.scheduler},
        lambda epoch, rng: trainer.epoch(epoch, rng, progress=progress),
        validate,
        ckpt_dir=ckpt_dir,
        resume_dir=resume_dir,
        fingerprint=fingerprint(cfg, mode, sem, max_history, sequences),
        max_epochs=cfg.max_epochs,
        patience=cfg.patience,
        seed=cfg.seed,
        stop_metric=stop_metric,
        best_extra={"spec": asdict(model.spec), "config": asdict(cfg)},
        device=runtime.device,
        log=log,
        world=runtime.world,
    )
    outcome.runtime = runtime
    return outcome


def load_model(path: Path, device: str | torch.device = "cpu") -> SeqToSID:
    """Rebuild a trained model from ``best.pt``."""
    state = load_torch(path, device)
    spec = state["spec"]
    model = SeqToSID(GRSpec(**{**spec, "vocab": tuple(spec["vocab"])}))
    model.load_state_dict(state["model"])
    return model.to(device).eval()
