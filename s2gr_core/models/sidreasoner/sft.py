"""Supervised fine-tuning of one phase (stage 1 alignment or stage 2 reasoning) on the shared epoch loop.

Batches group sequences of similar length and pad on the right to the longest; the loss is the
token mean over trained labels (``-100`` elsewhere). Early stopping watches the non-thinking
next-SID loss on the validation users (their SID NLL, summed over the SID's tokens).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from transformers import PreTrainedModel, get_linear_schedule_with_warmup

from s2gr_core.config.sidreasoner import PhaseConfig
from s2gr_core.models.common import epoch_batches
from s2gr_core.models.runtime import Runtime
from s2gr_core.models.sidreasoner.tokenizer import IGNORE
from s2gr_core.models.training import NOT_FINGERPRINTED, EpochResult, LogFn, TrainOutcome, fit, run_batches

# fit() keeps the highest score (above -1): the per-code geometric-mean probability of the validation
# targets, exp(-NLL / codes), which falls exactly when their SID NLL rises (every SID has the same length)
STOP = "code_geo_prob"


def pad_batch(
    ids: list[list[int]], labels: list[list[int]], pad: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded (input ids, attention mask, labels), each (B, T) with T the longest sequence.

    >>> x, m, y = pad_batch([[5, 6, 7], [8]], [[-100, 6, 7], [8]], 0, torch.device("cpu"))
    >>> x.tolist(), m.tolist(), y.tolist()
    ([[5, 6, 7], [8, 0, 0]], [[1, 1, 1], [1, 0, 0]], [[-100, 6, 7], [8, -100, -100]])
    """
    width = max(len(s) for s in ids)
    x = torch.full((len(ids), width), pad, dtype=torch.int64)
    y = torch.full((len(ids), width), IGNORE, dtype=torch.int64)
    for row, (s, lab) in enumerate(zip(ids, labels, strict=True)):
        x[row, : len(s)] = torch.as_tensor(s)
        y[row, : len(lab)] = torch.as_tensor(lab)
    mask = (torch.arange(width)[None] < torch.as_tensor([len(s) for s in ids])[:, None]).long()
    return x.to(device), mask.to(device), y.to(device)


def sequence_nll(model: PreTrainedModel, x: torch.Tensor, mask: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B,) negative log-likelihood of each row's trained labels, summed over its tokens."""
    logits = model(input_ids=x, attention_mask=mask).logits[:, :-1].float()
    target = y[:, 1:]
    nll = F.cross_entropy(logits.transpose(1, 2), target.clamp(min=0), reduction="none")
    return (nll * (target != IGNORE)).sum(1)


@torch.no_grad()
def validation_nll(
    model: PreTrainedModel, ids: list[list[int]], labels: list[list[int]], pad: int, batch: int, runtime: Runtime
) -> tuple[float, float]:
    """(mean SID NLL, mean NLL per trained token) of the validation next-SID samples."""
    was = model.training
    model.eval()
    total, tokens = 0.0, sum(sum(t != IGNORE for t in row) for row in labels)
    try:
        for start in range(0, len(ids), batch):
            with runtime.autocast():
                total += float(
                    sequence_nll(
                        model,
                        *pad_batch(ids[start : start + batch], labels[start : start + batch], pad, runtime.device),
                    ).sum()
                )
    finally:
        model.train(was)
    return total / max(len(ids), 1), total / max(tokens, 1)


def phase_fingerprint(cfg: PhaseConfig, start: str, ids: list[list[int]]) -> str:
    """Identity of a phase's run: its settings, the model it starts from, its data (not the epoch budget)."""
    identity = {k: v for k, v in asdict(cfg).items() if k not in NOT_FINGERPRINTED}
    digest = hashlib.sha256(json.dumps([identity, start], sort_keys=True).encode())
    for seq in ids:
        digest.update(np.asarray(seq, dtype=np.int64).tobytes() + b"|")
    return digest.hexdigest()[:16]


def train_phase(
    model: PreTrainedModel,
    train: tuple[list[list[int]], list[list[int]]],
    valid: tuple[list[list[int]], list[list[int]]],
    cfg: PhaseConfig,
    runtime: Runtime,
    *,
    pad: int,
    seed: int,
    start: str,
    resume_dir: Path,
    name: str,
    log: LogFn | None = None,
) -> TrainOutcome:
    """SFT until the validation SID NLL stops falling (checkpoint every epoch, resume after a kill).

    ``start`` names the weights the phase starts from (a fingerprint input: new start, new run).
    """
    ids, labels = train
    lengths = np.array([len(s) for s in ids])
    # the loss is a token mean over the labels the model predicts (all but each row's first)
    predicted = np.array([sum(t != IGNORE for t in lab[1:]) for lab in labels])
    model.to(runtime.device).train()
    world = runtime.world
    forward = world.wrap(model, runtime.device)
    opt = runtime.adamw(model.parameters(), cfg.lr, cfg.weight_decay)
    steps = cfg.max_epochs * -(-len(ids) // cfg.batch_size)
    sched = get_linear_schedule_with_warmup(opt, min(cfg.warmup_steps, steps), steps)

    def step(idx: np.ndarray) -> dict[str, torch.Tensor]:
        share = world.shard(idx)
        x, mask, y = pad_batch([ids[i] for i in share], [labels[i] for i in share], pad, runtime.device)
        with runtime.autocast():
            loss = forward(input_ids=x, attention_mask=mask, labels=y).loss
        opt.zero_grad(set_to_none=True)
        world.scale(loss, predicted[share].sum(), predicted[idx].sum()).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        return {"loss": loss.detach()}

    def train_epoch(epoch: int, rng: np.random.Generator) -> EpochResult:
        batches = epoch_batches(lengths, cfg.batch_size, rng, by_length=True)
        return run_batches(batches, step, len, desc=f"{name} epoch {epoch}", world=world)

    def validate() -> dict[str, float]:
        nll, per_code = validation_nll(model, *valid, pad, cfg.batch_size, runtime)
        return {"sid_nll": nll, STOP: math.exp(-per_code)}

    outcome = fit(
        model,
        {"optimizer": opt, "scheduler": sched},
        train_epoch,
        validate,
        ckpt_dir=resume_dir,
        fingerprint=phase_fingerprint(cfg, start, ids),
        max_epochs=cfg.max_epochs,
        patience=cfg.patience,
        seed=seed,
        stop_metric=STOP,
        best_extra={},
        device=runtime.device,
        log=log,
        world=world,
    )
    outcome.runtime = runtime
    return outcome
