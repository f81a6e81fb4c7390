"""Data-parallel training across processes: torchrun's environment, PyTorch DDP, one global batch.

A run launched by ``torchrun`` (or by ``s2gr stage`` when ``distributed.world_size`` > 1, which
relaunches itself through torchrun) finds ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` in its environment;
:func:`current_world` then joins the process group once (gloo on CPUs, NCCL on GPUs). Without
them the world is one process and nothing here costs anything.

The rule that keeps results independent of the world size: ``batch_size`` is the **global**
batch. Every rank draws the same epoch batches from the same seed and trains on its share of
each (``batch[rank::size]``); its loss, a mean over its share, is weighted by
``size * share / total`` (:meth:`World.scale`) so that DDP's gradient average is the gradient of
the whole batch's mean. Two ranks with batch 512 therefore step exactly as one process with batch
512 (within float rounding), a run may resume under another world size, and the learning rate
needs no rescaling. Raising ``batch_size`` to give more ranks more work is a change of the
optimisation (scale ``lr`` with it: about ``sqrt(k)`` for AdamW at k times the batch, then tune on
validation). In-batch negatives (S2GR's interest InfoNCE) come from the whole global batch, which
every rank knows.

Rank 0 alone validates (with the node's cores), writes checkpoints, logs, prints and publishes;
the others wait for its verdict. Checkpoint folders must be on a filesystem every rank sees (as a
DVC workspace is): each rank reads ``last.pt`` to resume, and a rank that finds another epoch than
rank 0 stops with an error naming the folder.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from s2gr_core.cores import available_cores

T = TypeVar("T")
# rank 0 validates while the others wait in a collective: allow a long validation (Beauty on a CPU)
TIMEOUT = timedelta(hours=2)


@dataclass(frozen=True, slots=True)
class World:
    """Where this process stands among the training processes (one process: rank 0 of 1)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    @property
    def main(self) -> bool:
        """Rank 0: the process that validates, checkpoints, logs and publishes."""
        return self.rank == 0

    def shard(self, idx: np.ndarray) -> np.ndarray:
        """This rank's share of a global batch: every ``size``-th example from ``rank``.

        Interleaving keeps the shares of a length-sorted batch equally long.

        >>> World(1, 2).shard(np.array([10, 11, 12, 13, 14])).tolist()
        [11, 13]
        """
        return idx[self.rank :: self.size]

    def rows(self, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """Positions of this rank's share within a global batch of ``n`` (see :meth:`shard`)."""
        return torch.arange(self.rank, n, self.size, device=device)

    def scale(self, loss: torch.Tensor, share: float, total: float) -> torch.Tensor:
        """This rank's mean ``loss`` over ``share`` of a batch's ``total`` examples (or targets, or
        tokens: whatever the mean is over), weighted by ``size * share / total`` so that DDP's
        gradient average is the gradient of the whole batch's mean (``loss`` itself on one process).

        >>> World(0, 2).scale(torch.tensor(3.0), share=1, total=4).item()  # 2 ranks, 1 of 4 targets here
        1.5
        """
        return loss if self.size == 1 else loss * (self.size * share / total)

    def wrap(self, module: nn.Module, device: torch.device) -> nn.Module:
        """``module`` under DDP across the world (itself on one process).

        ``static_graph``: every step uses the same parameters (S2GR leaves the heads of zero-weight
        losses out of all of them), which DDP learns in the first step instead of searching the
        autograd graph each time; constant buffers are not re-sent before each forward."""
        if self.size == 1:
            return module
        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids, static_graph=True, forward_sync_buffers=False)

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` summed over the ranks, in place (unchanged on one process)."""
        if self.size > 1:
            dist.all_reduce(tensor)
        return tensor

    def from_main(self, fn: Callable[[], T]) -> T:
        """``fn()`` run on rank 0 alone, its result given to every rank (a small picklable value)."""
        if self.size == 1:
            return fn()
        box: list[Any] = [fn() if self.main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def agree(self, value: int, what: str) -> None:
        """Raise on every rank unless all ranks hold the same ``value`` (``what`` says what it is)."""
        if self.size == 1:
            return
        seen = [torch.zeros((), dtype=torch.int64) for _ in range(self.size)]
        dist.all_gather(seen, torch.tensor(value, dtype=torch.int64))
        values = [int(v) for v in seen]
        if len(set(values)) > 1:
            raise RuntimeError(f"ranks disagree on {what}: {values} (rank order)")

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()

    def epoch_seed(self, seed: int, epoch: int) -> int:
        """A torch seed for this rank's epoch (dropout masks differ between ranks, and a resumed run
        draws the same ones whatever world it resumed in)."""
        return int(np.random.SeedSequence([seed, epoch, self.rank]).generate_state(1)[0])


SINGLE = World()


def core_share(processes: int) -> int:
    """The cores this process may use (:func:`available_cores`) divided among ``processes`` processes
    (at least 1 each)."""
    return max(1, available_cores() // processes)


def launched() -> bool:
    """Whether torchrun (or any launcher setting its variables) started this process."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


@cache
def current_world(device_type: str = "cpu") -> World:
    """This process's :class:`World`; joins the process group (gloo for CPUs, NCCL for GPUs) the
    first time it is called in a process that torchrun launched with more than one rank."""
    if not launched() or int(os.environ["WORLD_SIZE"]) == 1:
        return SINGLE
    world = World(
        rank=int(os.environ["RANK"]),
        size=int(os.environ["WORLD_SIZE"]),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        local_size=int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"])),
    )
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(world.local_rank)
        dist.init_process_group(backend, timeout=TIMEOUT)
    return world
