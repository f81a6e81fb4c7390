"""Paired comparison of two evaluated runs, user by user.

Both runs must score the same users of the same split. For each metric: the
mean of each run, the mean paired difference (B - A), a bootstrap confidence
interval of that difference (users resampled with replacement), and the paired
t-test p-value.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd


@dataclass(frozen=True, slots=True)
class Delta:
    metric: str
    mean_a: float
    mean_b: float
    delta: float
    ci_low: float
    ci_high: float
    p_value: float
    users: int

    @property
    def relative(self) -> float:
        return self.delta / self.mean_a if self.mean_a else float("nan")


def read_per_user(path: Path) -> pd.DataFrame:
    """A ``*_per_user.parquet`` file written by an evaluate stage."""
    frame = pd.read_parquet(path)
    if not {"user_id", "split"} <= set(frame.columns):
        raise ValueError(f"{path}: not a per-user evaluation file (needs user_id, split, metrics)")
    return frame


def bootstrap_ci(
    diff: np.ndarray, n_boot: int = 10_000, level: float = 0.95, seed: int = 0, chunk: int = 250
) -> tuple[float, float]:
    """Percentile CI of ``diff.mean()`` from ``n_boot`` resamples (chunked to bound memory)."""
    rng = np.random.default_rng(seed)
    n = len(diff)
    means = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        stop = min(start + chunk, n_boot)
        means[start:stop] = diff[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


def paired_t_pvalue(diff: np.ndarray) -> float:
    from scipy import stats

    if np.allclose(diff, diff[0]):
        return 1.0 if diff[0] == 0 else 0.0
    return float(stats.ttest_1samp(diff, 0.0).pvalue)


def compare(
    a: pd.DataFrame,
    b: pd.DataFrame,
    metrics: list[str],
    split: str = "test",
    n_boot: int = 10_000,
    seed: int = 0,
    level: float = 0.95,
) -> list[Delta]:
    """Compare per-user results (columns: user_id, split, <metrics>) of run A and run B."""
    a, b = a[a["split"] == split], b[b["split"] == split]
    if a.empty or b.empty:
        raise ValueError(f"no per-user rows for split {split!r} in {'run A' if a.empty else 'run B'}")
    joined = a.merge(b, on="user_id", suffixes=("_a", "_b"), how="outer", indicator=True)
    if (joined["_merge"] != "both").any():
        only = joined[joined["_merge"] != "both"]
        raise ValueError(
            f"the runs scored different users on {split}: {len(only)} user(s) in only one run "
            f"(e.g. user_id {only['user_id'].head(3).tolist()}); were they evaluated on the same split?"
        )
    out = []
    for metric in metrics:
        if f"{metric}_a" not in joined:
            raise ValueError(f"unknown metric {metric!r}; available: {[c for c in a.columns if '_at_' in c]}")
        va, vb = joined[f"{metric}_a"].to_numpy(float), joined[f"{metric}_b"].to_numpy(float)
        diff = vb - va
        low, high = bootstrap_ci(diff, n_boot=n_boot, level=level, seed=seed)
        out.append(Delta(metric, va.mean(), vb.mean(), diff.mean(), low, high, paired_t_pvalue(diff), len(diff)))
    return out


def format_deltas(deltas: list[Delta], name_a: str, name_b: str) -> str:
    head = f"{'metric':<14}{'A':>9}{'B':>9}{'B-A':>10}{'rel':>9}   95% CI (bootstrap)      p (paired t)"
    lines = [f"A = {name_a}", f"B = {name_b}", f"users: {deltas[0].users:,}" if deltas else "", head]
    for d in deltas:
        lines.append(
            f"{d.metric:<14}{d.mean_a:>9.4f}{d.mean_b:>9.4f}{d.delta:>+10.4f}{d.relative:>+9.1%}   "
            f"[{d.ci_low:+.4f}, {d.ci_high:+.4f}]      {d.p_value:.3g}"
        )
    return "\n".join(lines)
