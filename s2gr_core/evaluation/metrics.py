"""Full-ranking metrics with one relevant item per user (METHOD.md §2).

With the target at 1-based rank r in a user's list (r = 0: not in the list):
Recall@K = 1 if 1 <= r <= K else 0;  NDCG@K = 1 / log2(r + 1) if 1 <= r <= K else 0.
Means are over *all* users: a missing target counts as 0, never dropped.

Example::

    >>> items = np.array([[3, 7, 1], [5, 2, 9]]); targets = np.array([7, 4])
    >>> target_ranks(items, targets)
    array([2, 0])
    >>> per_user_metrics(np.array([2, 0]), ks=(1, 5))["ndcg_at_5"]
    array([0.63092975, 0.        ])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

KS: tuple[int, ...] = (1, 5, 10, 20)


def target_ranks(items: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """1-based rank of ``targets[u]`` in ``items[u]`` (shape (U, K)); 0 where absent. Shape (U,)."""
    hits = items == targets[:, None]
    return np.where(hits.any(axis=1), hits.argmax(axis=1) + 1, 0)


def per_user_metrics(ranks: np.ndarray, ks: Sequence[int] = KS) -> dict[str, np.ndarray]:
    """``recall_at_K`` and ``ndcg_at_K`` arrays, one value per user."""
    out: dict[str, np.ndarray] = {}
    safe = np.maximum(ranks, 1)
    for k in ks:
        hit = (ranks >= 1) & (ranks <= k)
        out[f"recall_at_{k}"] = hit.astype(np.float64)
        out[f"ndcg_at_{k}"] = np.where(hit, 1.0 / np.log2(safe + 1.0), 0.0)
    return out


def mean_metrics(per_user: dict[str, np.ndarray]) -> dict[str, float]:
    return {k: float(v.mean()) if len(v) else 0.0 for k, v in per_user.items()}


def coverage(items: np.ndarray, n_items: int, k: int) -> float:
    """Share of the catalogue that appears in at least one top-``k`` list."""
    return float(len(np.unique(items[:, :k]))) / max(n_items, 1)
