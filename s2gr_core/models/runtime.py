"""How a model runs on its device: precision, compiled steps, the optimiser, device-side loss sums.

One :class:`Runtime` per training run, built by :func:`runtime_for` from a config's ``device``,
``threads``, ``precision`` and ``compile`` fields, so SASRec, TIGER and S2GR share one mechanism:

- ``precision: bf16`` runs matmuls and attention under bf16 autocast (weights, optimiser state and
  losses stay fp32). On a CPU it needs native bf16 (AVX512-BF16 or AMX); without it the run says so
  and stays in fp32, since emulated bf16 is slower than fp32.
- ``compile: true`` wraps a step in ``torch.compile`` (CUDA graphs on a GPU: ``reduce-overhead``).
  Where the platform cannot compile (no C++ compiler, an unsupported op), the first failure is
  reported once as a warning and the step runs eagerly from then on; a stage never fails for it.
- :class:`LossSums` adds loss terms on the device and reads them once per logging interval, so the
  hot loop has no host sync per step.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

import torch

from s2gr_core.allocator import malloc_policy
from s2gr_core.models.common import resolve_device, set_threads
from s2gr_core.models.distributed import SINGLE, World, core_share, current_world

Precision = Literal["fp32", "bf16"]


@cache
def cpu_bf16(cpuinfo: str = "/proc/cpuinfo") -> str | None:
    """The native bf16 instruction set of this CPU (``"AMX-BF16"``, ``"AVX512-BF16"``), or None.

    Read from the kernel's CPU flags: oneDNN reports bf16 "supported" where it only emulates it.
    """
    try:
        with open(cpuinfo) as handle:
            flags = next((line.split(":", 1)[1].split() for line in handle if line.startswith("flags")), [])
    except OSError:  # not Linux
        return None
    return "AMX-BF16" if "amx_bf16" in flags else "AVX512-BF16" if "avx512_bf16" in flags else None


def effective_precision(requested: Precision, device: torch.device) -> tuple[Precision, str]:
    """(the precision a run will use, a sentence saying why) for ``requested`` on ``device``."""
    if requested == "fp32":
        return "fp32", "fp32"
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", f"bf16 autocast on {torch.cuda.get_device_name(device)}"
        return "fp32", "bf16 requested but this GPU has no bf16: running in fp32"
    native = cpu_bf16()
    if native:
        return "bf16", f"bf16 autocast, native on this CPU ({native})"
    return "fp32", "bf16 requested but this CPU has no native bf16 (AVX512-BF16/AMX): running in fp32"


class CompiledStep:
    """``fn`` through ``torch.compile``, falling back to eager ``fn`` (with one warning) on failure.

    A failure can surface in the forward or, for a training step, in the backward; the caller wraps
    both in :meth:`guard` so that a failed first step is redone eagerly.
    """

    def __init__(self, fn: Callable[..., Any], name: str, device: torch.device, dynamic: bool | None = None):
        self.eager, self.name = fn, name
        # CUDA graphs replay a whole step without per-kernel launches; a CPU has no such thing.
        mode = "reduce-overhead" if device.type == "cuda" else "default"
        self.compiled: Callable[..., Any] | None = torch.compile(fn, mode=mode, dynamic=dynamic)
        self.failure: str | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        fn = self.compiled if self.compiled is not None else self.eager  # a compiled module has no truth value
        return fn(*args, **kwargs)

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Run the body; if the compiled step fails inside it, switch to eager and raise ``Retry``."""
        if self.compiled is None:
            yield
            return
        try:
            yield
        except Exception as exc:  # compilation errors come as many types (dynamo, inductor, C++ build)
            self.compiled, self.failure = None, f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
            warnings.warn(f"{self.name}: torch.compile failed ({self.failure}); running eagerly", stacklevel=3)
            raise Retry from exc


class Retry(Exception):
    """The compiled step failed and was switched to eager: run the same step again."""


def run_guarded(step: CompiledStep | None, body: Callable[[], Any]) -> Any:
    """``body()``, run again eagerly when ``step``'s compiled version fails inside it."""
    if step is None:
        return body()
    try:
        with step.guard():
            return body()
    except Retry:
        return body()


@dataclass(slots=True)
class Runtime:
    device: torch.device
    precision: Precision
    compile: bool
    threads: int
    note: str  # how the precision was chosen, for logs and MLflow tags
    world: World = SINGLE  # the data-parallel processes this one trains with

    @property
    def crop_multiple(self) -> int:
        """Length buckets crop to multiples of this many items: compiled steps then see a small fixed
        set of shapes (one graph each) instead of one per history length."""
        return 4 if self.compile else 1

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast on this device when the run is bf16, else nothing."""
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def step(self, fn: Callable[..., Any], name: str, dynamic: bool | None = None) -> CompiledStep | None:
        """``fn`` compiled (with eager fallback) when the run compiles, else None (call ``fn`` itself)."""
        return CompiledStep(fn, name, self.device, dynamic) if self.compile else None

    def adamw(self, params: Any, lr: float, weight_decay: float = 0.0) -> torch.optim.AdamW:
        """AdamW with the fused kernel (one launch for all parameters; CPU and CUDA). ``params`` may be
        parameter groups, each with its own weight decay."""
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)

    def tags(self) -> dict[str, str]:
        return {
            "precision": self.precision,
            "precision_note": self.note,
            "compile": str(self.compile),
            "threads": str(self.threads),
            "world_size": str(self.world.size),
            "omp_wait_policy": wait_policy(),
            "malloc": malloc_policy(),
        }


def wait_policy() -> str:
    """How idle OpenMP threads wait, as set in the environment (see ``s2gr_core.__init__``)."""
    set_ = [f"{k}={os.environ[k]}" for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT") if k in os.environ]
    return ", ".join(set_) or "OpenMP default"


def runtime_for(device: str, threads: int, precision: Precision, compile: bool) -> Runtime:
    """The runtime of one run: its device, its threads set, its effective precision, its world.

    Under torchrun with several ranks, each rank takes its own GPU (``cuda:LOCAL_RANK``) or, with
    ``threads: 0``, an equal share of the node's cores."""
    dev = resolve_device(device)
    world = current_world(dev.type)
    if world.size > 1 and dev.type == "cuda":
        dev = torch.device("cuda", world.local_rank)
    used = set_threads(threads or core_share(world.local_size))
    chosen, note = effective_precision(precision, dev)
    if chosen != precision:
        warnings.warn(note, stacklevel=2)
    ranks = f", rank 0 of {world.size} (DDP, {dist_backend()})" if world.size > 1 else ""
    if world.main:
        print(
            f"runtime: {dev}, {used} threads (OpenMP waits: {wait_policy()}; malloc: {malloc_policy()}), "
            f"{note}, compile {compile}{ranks}",
            flush=True,
        )
    return Runtime(dev, chosen, compile, used, note, world)


def dist_backend() -> str:
    return str(torch.distributed.get_backend()) if torch.distributed.is_initialized() else "none"


@dataclass(slots=True)
class LossSums:
    """Sums of each loss term weighted by batch size, kept on the device until read."""

    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    count: int = 0

    def add(self, terms: dict[str, torch.Tensor], n: int) -> None:
        for key, value in terms.items():
            weighted = value.detach().float() * n
            self.sums[key] = self.sums[key] + weighted if key in self.sums else weighted
        self.count += n

    def means(self, world: World = SINGLE) -> dict[str, float]:
        """Every term's mean so far (one host sync for all of them); over every rank's examples
        when ``world`` has several (a collective: all ranks call it together)."""
        if not self.sums:
            return {}
        keys = list(self.sums)
        count = torch.tensor(float(self.count), device=self.sums[keys[0]].device)
        values = world.sum_(torch.stack([*(self.sums[k] for k in keys), count])).cpu().tolist()
        return {k: v / max(values[-1], 1) for k, v in zip(keys, values[:-1], strict=True)}
