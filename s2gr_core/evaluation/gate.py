"""The promotion gate: does a challenger replace the champion?

From the per-user results of both on the same users of one split: promote when there is no
champion, or when the mean paired difference of the metric is at least ``min_improvement`` and
(with ``significance``) its paired bootstrap confidence interval lies above 0.

Example: champion N@10 0.0412, challenger 0.0468 on 943 users, delta +0.0056, 95% CI
[+0.0011, +0.0102], min_improvement 0.0 -> promote ("N@10 +0.0056, CI excludes 0").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd

from s2gr_core.config.serving import RegistryConfig
from s2gr_core.evaluation.compare import compare


@dataclass(frozen=True, slots=True)
class Decision:
    promote: bool
    reason: str
    metric: str
    split: str
    new: float
    old: float | None = None
    delta: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    users: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def metric_mean(per_user: pd.DataFrame, rule: RegistryConfig) -> tuple[float, int]:
    rows = per_user[per_user["split"] == rule.split]
    if rows.empty or rule.metric not in rows:
        raise ValueError(f"per-user results have no {rule.metric!r} on split {rule.split!r}")
    return float(rows[rule.metric].mean()), len(rows)


def decide(challenger: pd.DataFrame, champion: pd.DataFrame | None, rule: RegistryConfig) -> Decision:
    """Gate ``challenger`` against ``champion`` (per-user frames: user_id, split, metrics)."""
    new, users = metric_mean(challenger, rule)
    if champion is None:
        return Decision(True, "no champion yet", rule.metric, rule.split, new, users=users)
    [d] = compare(
        champion, challenger, [rule.metric], rule.split, n_boot=rule.bootstrap, seed=rule.seed, level=rule.level
    )
    enough = d.delta >= rule.min_improvement
    significant = d.ci_low > 0.0
    promote = enough and (significant or not rule.significance)
    ci = f"{rule.level:.0%} CI [{d.ci_low:+.4f}, {d.ci_high:+.4f}]"
    if promote:
        reason = f"{rule.metric} {d.delta:+.4f} >= {rule.min_improvement:+.4f}" + (
            f", {ci} excludes 0" if rule.significance else f" ({ci}; significance not required)"
        )
    elif not enough:
        reason = f"{rule.metric} {d.delta:+.4f} is below the required {rule.min_improvement:+.4f} ({ci})"
    else:
        reason = f"{rule.metric} {d.delta:+.4f} is not significant: {ci} includes 0"
    return Decision(
        promote, reason, rule.metric, rule.split, d.mean_b, d.mean_a, d.delta, d.ci_low, d.ci_high, d.p_value, d.users
    )
