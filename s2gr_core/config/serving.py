"""The model registry's promotion gate and the served model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from s2gr_core.config.base import _help, require

Family = Literal["sasrec", "tiger", "s2gr"]


@dataclass(frozen=True, slots=True)
class RegistryConfig:
    families: tuple[Family, ...] = _help(
        "Model families the promote stage registers as versions of '<prefix>-<dataset>-<family>', each gated "
        "against its own @champion; the families' champions then compete for '<prefix>-<dataset>@champion'."
    )
    prefix: str = _help("Registered model names start with this.")
    metric: str = _help("Per-user metric the gate compares (a column of reports/eval/*_per_user.parquet).")
    split: Literal["valid", "test"] = _help(
        "Split the gate compares on: 'valid' keeps the test split for reporting only."
    )
    min_improvement: float = _help("Promote only if the mean paired difference of the metric is at least this.")
    significance: bool = _help("Promote only if the paired bootstrap CI of the difference lies above 0.")
    level: float = _help("Confidence level of that interval.")
    bootstrap: int = _help("Bootstrap resamples of the users.")
    seed: int = _help("Seed of the bootstrap: the same results give the same decision.")

    def __post_init__(self) -> None:
        require(bool(self.families), "registry.families", "name at least one model family")
        require(len(set(self.families)) == len(self.families), "registry.families", f"repeats: {list(self.families)}")
        require(bool(self.prefix.strip()), "registry.prefix", "must be a non-empty name")
        require(self.metric.startswith(("ndcg_at_", "recall_at_")), "registry.metric", f"unknown {self.metric!r}")
        require(0.5 <= self.level < 1.0, "registry.level", f"must be in [0.5, 1), got {self.level}")
        require(self.bootstrap >= 100, "registry.bootstrap", f"must be >= 100, got {self.bootstrap}")


@dataclass(frozen=True, slots=True)
class ServeConfig:
    host: str = _help("Address `s2gr serve` listens on (loopback by default: expose it on purpose).")
    port: int = _help("Port `s2gr serve` listens on.")
    k: int = _help("List length when a request does not say (its `k` param).")
    max_batch: int = _help("Requests per call above which a call is refused with HTTP 400.")

    def __post_init__(self) -> None:
        require(1 <= self.port <= 65535, "serve.port", f"must be a TCP port, got {self.port}")
        require(self.k >= 1, "serve.k", f"must be >= 1, got {self.k}")
        require(self.max_batch >= 1, "serve.max_batch", f"must be >= 1, got {self.max_batch}")
