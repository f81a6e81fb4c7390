"""What a stage is: a typed function plus its declared inputs, outputs and parameters.

The registry (``s2gr_core.stages.STAGES``) is the single declaration that both
``dvc.yaml`` (checked by a contract test) and the CLI (``s2gr stage NAME``) use.
A stage function is called as ``fn(params, **paths)`` where ``paths`` maps each
declared dep/out name to an absolute :class:`~pathlib.Path`.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from s2gr_core.config import Params

# a model stage's run tag: md5 of the best.pt it published (the promote stage finds a model's training run by it)
WEIGHTS_TAG = "weights_md5"


class StageFailed(RuntimeError):
    """A stage rejected its input. ``artifacts`` are files that explain why (e.g. a report)."""

    def __init__(self, message: str, artifacts: list[Path] | None = None):
        super().__init__(message)
        self.artifacts = artifacts or []


class Reporter(Protocol):
    """What a stage may ask of the tracking layer while it runs (MLflow in ``s2gr.tracking``).

    Core code only sees this protocol, so it stays free of MLflow imports.
    """

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Per-step metrics, e.g. one call per training epoch."""

    def evaluation_history(self, dataset: str) -> list[dict[str, Any]]:
        """Earlier evaluation runs on ``dataset``: dicts with model, seed, run_id, start_time, metrics."""
        return []


class NullReporter:
    """Used when tracking is off: remembers nothing."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        return None

    def evaluation_history(self, dataset: str) -> list[dict[str, Any]]:
        return []


@dataclass(slots=True)
class StageResult:
    """What a stage reports back, for logging (MLflow) and the console."""

    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, Any] = field(default_factory=dict)  # run details worth recording (e.g. source, model, seed)
    artifacts: list[Path] = field(default_factory=list)
    summary: str = ""


@dataclass(frozen=True, slots=True)
class Stage:
    """One stage. ``fn`` names its function as ``"module:function"``, imported only when the stage
    runs: listing stages or building the CLI imports no torch, pandas or GX, and a stage loads only
    the libraries it uses (``s2gr stage fetch`` took 7.1 s with every stage module imported, 3.9 s
    without).
    ``bound`` holds keyword options fixed per stage (``model="sasrec"``)."""

    name: str
    fn: str
    help: str
    deps: dict[str, str]  # argument name -> path relative to the project root
    outs: dict[str, str]
    params: tuple[str, ...]  # params.yaml sections / dotted keys the stage reads
    metrics: dict[str, str] = field(default_factory=dict)  # DVC metrics outputs (cache: false)
    code: tuple[str, ...] = ()  # source paths whose change must re-run the stage
    bound: dict[str, Any] = field(default_factory=dict)
    # working state kept between runs and never a DVC output (resume checkpoints): not cached, not
    # hashed, so what it records (timings, RNG states mid-run) does not make the outputs differ
    scratch: dict[str, str] = field(default_factory=dict)
    # trains data-parallel across ``distributed.world_size`` processes (``s2gr stage`` relaunches it
    # under torchrun); only rank 0 publishes and logs
    distributed: bool = False

    @property
    def function(self) -> Callable[..., StageResult]:
        """The stage function (imported now), with ``bound`` applied."""
        module, _, name = self.fn.partition(":")
        fn = getattr(importlib.import_module(module), name)
        return partial(fn, **self.bound) if self.bound else fn

    def paths(self, root: Path) -> dict[str, Path]:
        return {k: root / v for k, v in {**self.deps, **self.outs, **self.metrics, **self.scratch}.items()}

    def run(self, params: Params, root: Path, reporter: Reporter | None = None, **paths: Path) -> StageResult:
        """Run the stage on ``root``'s paths; ``paths`` replaces some of them (e.g. a benchmark's own folder)."""
        fn = self.function
        kwargs: dict[str, Any] = {**self.paths(root), **paths}
        if "reporter" in inspect.signature(fn).parameters:
            kwargs["reporter"] = reporter or NullReporter()
        return fn(params, **kwargs)
