"""The epoch loop every model shares: early stopping, a checkpoint every epoch, resume.

Checkpoints: ``ckpt_dir/best.pt`` (the weights with the best validation score, plus ``best_extra``),
published when training ends, and in ``resume_dir`` (default ``ckpt_dir``; the pipeline keeps it out
of its DVC outputs) ``last.pt`` (everything needed to resume: model, optimiser and scheduler states,
epoch, early-stopping state, RNG states, the history with its timings, a fingerprint of config and
data) and the running ``best.pt``, so a killed run leaves the published model as it was.
An interrupted run resumes from ``last.pt`` when the fingerprint still matches and training
had not finished; otherwise it starts afresh. A model supplies only what an epoch computes
(``train_epoch``) and how it is scored (``validate``).

Under data-parallel training (``world``, see ``s2gr_core.models.distributed``) every rank runs this
loop in step; rank 0 alone validates (with every core of its node while the others wait), writes
the checkpoints, logs and prints, and its verdict (improved, stop) is every rank's.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from s2gr_core.io import atomic_path, load_torch, save_torch
from s2gr_core.models.common import peak_memory_mb
from s2gr_core.models.distributed import SINGLE, World
from s2gr_core.models.runtime import LossSums, Runtime

LogFn = Callable[[dict[str, float], int], None]
# Budget and placement do not change what an epoch computes: a run may resume under a new budget.
NOT_FINGERPRINTED = ("max_epochs", "patience", "device", "threads")
TIMINGS = ("epoch_seconds", "train_samples_per_s")  # the history's per-epoch fields that vary run to run


@dataclass(slots=True)
class EpochResult:
    losses: dict[str, float]  # mean of each loss term over the epoch ("loss" = the total)
    samples: int  # training targets seen


@dataclass(slots=True)
class TrainOutcome:
    """A finished training run; ``model`` holds the best weights, in eval mode."""

    model: nn.Module
    best_epoch: int
    epochs_run: int
    best_valid: dict[str, float]
    seconds_per_epoch: float  # mean over every epoch of the history (train + validation)
    samples_per_second: float  # mean training-only rate over every epoch of the history
    resumed_from: int | None
    peak_memory_mb: float
    device: str
    history: list[dict[str, float]] = field(default_factory=list)
    runtime: Runtime | None = None  # how it ran (precision, compile, threads): decoding runs the same way


def stop_metric_for(ks: tuple[int, ...]) -> str:
    """The early-stopping metric: validation NDCG@10, or NDCG at the largest K when 10 is not evaluated."""
    return f"ndcg_at_{10 if 10 in ks else max(ks)}"


def run_batches(
    batches: list[np.ndarray],
    step: Callable[[np.ndarray], dict[str, torch.Tensor]],
    samples: Callable[[np.ndarray], int],
    desc: str,
    progress: bool = True,
    log_every: int = 20,
    world: World = SINGLE,
) -> EpochResult:
    """One epoch's optimiser steps, with a progress bar; loss terms are summed on the device
    (weighted by batch size) and read only every ``log_every`` batches and at the end.

    ``step(idx)`` trains on the examples ``idx`` (its share of them, with several ranks) and
    returns its loss terms ("loss" = the total); ``samples(idx)`` is how many training targets they
    hold. With several ranks the epoch's losses are means over every rank's examples, and a batch
    too small to give every rank an example (at most the epoch's last) is left out.
    """
    sums, seen = LossSums(), 0
    batches = [idx for idx in batches if len(idx) >= world.size]
    shown = progress and world.main
    bar = tqdm(batches, desc=desc, leave=False, mininterval=1.0, disable=None if shown else True)  # None: a tty
    for b, idx in enumerate(bar):
        sums.add(step(idx), len(world.shard(idx)))
        seen += samples(idx)
        if shown and b % log_every == 0:
            bar.set_postfix(loss=f"{sums.means()['loss']:.4f}")
    return EpochResult(sums.means(world), seen)


def scratch_checkpoints(model_dir: Path, resume_dir: Path) -> Path:
    """``resume_dir``, with a resume checkpoint that an earlier version left in ``model_dir`` moved
    there (in the DVC output it changed the output's hash with every run's timings); said when moved."""
    stale = model_dir / "last.pt"
    if stale.is_file():
        resume_dir.mkdir(parents=True, exist_ok=True)
        if (model_dir / "best.pt").is_file() and not (resume_dir / "best.pt").is_file():
            shutil.copy2(model_dir / "best.pt", resume_dir / "best.pt")  # the running best a resume starts from
        stale.replace(resume_dir / "last.pt")
        print(f"moved {stale} to {resume_dir}: resume checkpoints are scratch state, not a DVC output", flush=True)
    return resume_dir


def validate_with_node(validate: Callable[[], dict[str, float]], world: World) -> dict[str, float]:
    """``validate()`` on rank 0 with the threads of every rank of its node (they wait meanwhile)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(threads * world.local_size)
    try:
        return validate()
    finally:
        torch.set_num_threads(threads)


def publish_best(last_path: Path, running_best: Path, best_path: Path, resume_dir: Path, max_epochs: int) -> None:
    """Mark ``last.pt`` finished and publish the running best as ``best_path`` (the very bytes validated)."""
    if not running_best.is_file():
        raise RuntimeError(f"{resume_dir}: no best checkpoint was written (max_epochs={max_epochs})")
    final = load_torch(last_path, "cpu")
    final["finished"] = True
    save_torch(final, last_path)
    if running_best != best_path:
        with atomic_path(best_path) as tmp:
            shutil.copyfile(running_best, tmp)


def fit(
    model: nn.Module,
    stateful: dict[str, Any],
    train_epoch: Callable[[int, np.random.Generator], EpochResult],
    validate: Callable[[], dict[str, float]],
    *,
    ckpt_dir: Path,
    fingerprint: str,
    max_epochs: int,
    patience: int,
    seed: int,
    stop_metric: str,
    best_extra: dict[str, Any],
    device: torch.device,
    log: LogFn | None = None,
    resume_dir: Path | None = None,
    world: World = SINGLE,
) -> TrainOutcome:
    """Train until ``patience`` epochs pass without a better ``stop_metric``; load the best weights.

    ``stateful`` maps names to objects with ``state_dict``/``load_state_dict`` (optimiser,
    scheduler) that must resume with the model. ``world``: the data-parallel ranks (module docstring).
    """
    rng = np.random.default_rng(seed)
    start_epoch, best, best_epoch, bad_epochs, history, resumed = 1, -1.0, 0, 0, [], None
    resume_dir = scratch_checkpoints(ckpt_dir, resume_dir) if resume_dir not in (None, ckpt_dir) else ckpt_dir
    last_path, best_path, running_best = resume_dir / "last.pt", ckpt_dir / "best.pt", resume_dir / "best.pt"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    resume_dir.mkdir(parents=True, exist_ok=True)
    if last_path.is_file():
        state = load_torch(last_path, device)
        if state.get("fingerprint") == fingerprint and "stateful" in state and not state.get("finished"):
            model.load_state_dict(state["model"])
            for name, obj in stateful.items():
                obj.load_state_dict(state["stateful"][name])
            rng.bit_generator.state = state["numpy_rng"]
            torch.set_rng_state(state["torch_rng"].cpu())  # map_location moved it to the device
            start_epoch, best, best_epoch = state["epoch"] + 1, state["best"], state["best_epoch"]
            bad_epochs, history, resumed = state["bad_epochs"], state["history"], state["epoch"]
            if world.main:
                print(f"resuming from epoch {state['epoch']} checkpoint (best {stop_metric} {best:.4f})", flush=True)
    world.agree(start_epoch, f"the epoch to start from: does every rank see {last_path}?")

    for epoch in range(start_epoch, max_epochs + 1):
        if bad_epochs >= patience:
            break
        model.train()
        if world.size > 1:
            torch.manual_seed(world.epoch_seed(seed, epoch))
        started = time.time()
        result = train_epoch(epoch, rng)
        train_seconds = time.time() - started
        valid = world.from_main(partial(validate_with_node, validate, world))
        epoch_seconds = time.time() - started
        improved = valid[stop_metric] > best
        if improved:
            best, best_epoch, bad_epochs = valid[stop_metric], epoch, 0
            if world.main:
                save_torch({"model": model.state_dict(), "epoch": epoch, "valid": valid, **best_extra}, running_best)
        else:
            bad_epochs += 1
        row = {
            "epoch": epoch,
            **{f"train_{k}": v for k, v in result.losses.items()},
            "epoch_seconds": epoch_seconds,
            "train_samples_per_s": result.samples / max(train_seconds, 1e-9),
            **{f"valid_{k}": v for k, v in valid.items()},
        }
        history.append(row)
        if not world.main:
            continue
        if log is not None:
            log({k: v for k, v in row.items() if k != "epoch"}, epoch)
        print(
            f"epoch {epoch:3d}  loss {result.losses['loss']:.4f}  valid {stop_metric} {valid[stop_metric]:.4f}"
            f"{'  *' if improved else ''}  ({epoch_seconds:.1f}s)",
            flush=True,
        )
        save_torch(
            {
                "model": model.state_dict(),
                "stateful": {name: obj.state_dict() for name, obj in stateful.items()},
                "epoch": epoch,
                "best": best,
                "best_epoch": best_epoch,
                "bad_epochs": bad_epochs,
                "history": history,
                "fingerprint": fingerprint,
                "numpy_rng": rng.bit_generator.state,
                "torch_rng": torch.get_rng_state(),
                "finished": False,
            },
            last_path,
        )

    if world.main:
        publish_best(last_path, running_best, best_path, resume_dir, max_epochs)
    world.barrier()  # every rank then loads the published weights
    if world.size > 1 and world.main:  # the node's other ranks are done: rank 0 decodes with all its cores
        torch.set_num_threads(torch.get_num_threads() * world.local_size)
    best_state = load_torch(best_path, device)
    model.load_state_dict(best_state["model"])
    model.eval()
    # Over the whole history, so a resumed run (even one resumed only to finish) reports every epoch.
    mean_epoch = float(np.mean([h["epoch_seconds"] for h in history])) if history else 0.0
    return TrainOutcome(
        model=model,
        best_epoch=best_epoch,
        epochs_run=int(history[-1]["epoch"]) if history else 0,
        best_valid=best_state["valid"],
        seconds_per_epoch=mean_epoch,
        samples_per_second=float(np.mean([h["train_samples_per_s"] for h in history])) if history else 0.0,
        resumed_from=resumed,
        peak_memory_mb=peak_memory_mb(device),
        device=str(device),
        history=history,
    )
