"""Item co-occurrence graph from training sequences, and personalised-PageRank smoothing.

Only the *training* part of each user's sequence may go in (METHOD.md §3): validation and
test targets must never leak into the graph, so callers pass ``train.parquet`` sequences.

Worked example (window 1, uniform weights): sequences ``[0, 1, 2]`` and ``[1, 2]`` give the
pairs (0,1), (1,2), (1,2), so A[1,2] = A[2,1] = 2 and A[0,1] = A[1,0] = 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


def cooccurrence(sequences: list[np.ndarray], n_items: int, window: int, weighting: str = "uniform") -> sp.csr_matrix:
    """Symmetric (N, N) co-occurrence counts of items at most ``window`` positions apart.

    ``weighting='inverse_distance'`` weighs a pair d positions apart by 1/d. The diagonal
    (an item next to itself) is dropped. Vectorised: one pass per offset d, not per user.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if weighting not in ("uniform", "inverse_distance"):
        raise ValueError(f"unknown weighting {weighting!r}")
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    flat = np.concatenate(sequences).astype(np.int64) if len(sequences) else np.zeros(0, np.int64)
    if flat.size and (flat.min() < 0 or flat.max() >= n_items):
        raise ValueError(f"item ids must lie in [0, {n_items}); found {int(flat.min())}..{int(flat.max())}")
    owner = np.repeat(np.arange(len(sequences)), lengths)
    rows, cols, vals = [], [], []
    for d in range(1, window + 1):
        same = owner[d:] == owner[:-d]
        a, b = flat[:-d][same], flat[d:][same]
        keep = a != b
        rows.append(a[keep])
        cols.append(b[keep])
        vals.append(np.full(int(keep.sum()), 1.0 if weighting == "uniform" else 1.0 / d, dtype=np.float64))
    r, c, v = (np.concatenate(x) if x else np.zeros(0) for x in (rows, cols, vals))
    upper = sp.coo_matrix((v, (r, c)), shape=(n_items, n_items)).tocsr()
    adjacency = (upper + upper.T).tocsr()
    adjacency.sum_duplicates()
    adjacency.eliminate_zeros()
    return adjacency.astype(np.float32)


def normalise(adjacency: sp.csr_matrix) -> sp.csr_matrix:
    """Â = D^-1/2 A D^-1/2; an isolated item (degree 0) keeps an all-zero row."""
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    inv_sqrt = np.zeros_like(degree)
    np.divide(1.0, np.sqrt(degree), out=inv_sqrt, where=degree > 0)
    scale = sp.diags(inv_sqrt)
    return (scale @ adjacency @ scale).tocsr().astype(np.float32)


def ppr_weights(alpha: float, hops: int) -> np.ndarray:
    """β_k = α(1−α)^k / Σ_j α(1−α)^j for k = 0..K."""
    raw = alpha * (1.0 - alpha) ** np.arange(hops + 1)
    return raw / raw.sum()


def smooth(features: np.ndarray, norm_adj: sp.csr_matrix, alpha: float, hops: int) -> np.ndarray:
    """H_align = Σ_k β_k H(k), with H(0) = X and H(k) = (1−α) Â H(k−1) + α X (METHOD.md §3).

    features: (N, D) -> (N, D) float32.
    """
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    if hops < 0:
        raise ValueError(f"hops must be >= 0, got {hops}")
    x = features.astype(np.float64)
    beta = ppr_weights(alpha, hops)
    h = x
    out = beta[0] * h
    for k in range(1, hops + 1):
        h = (1.0 - alpha) * (norm_adj @ h) + alpha * x
        out += beta[k] * h
    return out.astype(np.float32)


@dataclass(frozen=True, slots=True)
class GraphStats:
    edges: int  # undirected item pairs with a positive weight
    density: float
    isolated_items: int
    degree_p50: float
    degree_p90: float
    degree_p99: float
    degree_max: float

    def as_dict(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in self.__slots__}


def graph_stats(adjacency: sp.csr_matrix) -> GraphStats:
    """Edges, density, isolated items and quantiles of the (unweighted) degree."""
    n = adjacency.shape[0]
    degree = np.diff(adjacency.indptr)  # neighbours per item
    edges = int(adjacency.nnz // 2)
    q = np.quantile(degree, [0.5, 0.9, 0.99]) if n else np.zeros(3)
    return GraphStats(
        edges=edges,
        density=round(edges / max(n * (n - 1) / 2, 1), 8),
        isolated_items=int((degree == 0).sum()),
        degree_p50=float(q[0]),
        degree_p90=float(q[1]),
        degree_p99=float(q[2]),
        degree_max=float(degree.max()) if n else 0.0,
    )
