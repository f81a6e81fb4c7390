"""Semantic IDs: de-duplication, the constrained-decoding tables, and the reasoning cluster targets.

A SID is the item's L codes plus one de-duplication code (fixed length L+1): items that
share all L codes are numbered 0, 1, 2, ... by item id, everybody else gets 0.

Decoding tables (:class:`SidTrie`): decoding is a walk over prefix states. The root is
state 0 of position 0; ``children[l][state, code]`` is the next position's state, or -1
when no real item continues the prefix with that code; at the last position it is the item id.
So a beam search masks logits with ``children[l][states] >= 0`` and advances all beams with
one gather, no per-beam callbacks.

Example, SIDs (item 0) [1, 0], (item 1) [1, 1], (item 2) [0, 0] with vocab (2, 2)::

    children[0] = [[ 0,  1]]          # root: code 0 -> state 0, code 1 -> state 1
    children[1] = [[ 2, -1],          # after code 0: only 0 (item 2)
                   [ 0,  1]]          # after code 1: 0 -> item 0, 1 -> item 1
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from s2gr_core.io import atomic_path
from s2gr_core.semantic.quantize import kmeans


class SidError(ValueError):
    """SIDs cannot be built or are not unique."""


def deduplicate(codes: np.ndarray) -> np.ndarray:
    """(N, L) codes -> (N, L+1) SIDs, unique per item; the extra code numbers items within a collision group.

    >>> deduplicate(np.array([[1, 2], [0, 0], [1, 2]])).tolist()
    [[1, 2, 0], [0, 0, 0], [1, 2, 1]]
    """
    n, _levels = codes.shape
    order = np.lexsort((np.arange(n), *codes.T[::-1]))  # by codes, ties by item id
    ranked = codes[order]
    new_group = np.ones(n, dtype=bool)
    new_group[1:] = (ranked[1:] != ranked[:-1]).any(axis=1)
    start = np.maximum.accumulate(np.where(new_group, np.arange(n), 0))
    extra = np.empty(n, dtype=np.int64)
    extra[order] = np.arange(n) - start
    sids = np.concatenate([codes, extra[:, None]], axis=1)
    if len(np.unique(sids, axis=0)) != n:  # cannot happen by construction; guard what decoding relies on
        raise SidError("SIDs are not unique after de-duplication")
    return sids


@dataclass(slots=True)
class SidTrie:
    vocab: tuple[int, ...]  # codes per position (L levels of K, then the de-dup vocabulary)
    children: list[np.ndarray]  # position l: (states_l, vocab_l) int32 -> next state / item id / -1

    @classmethod
    def build(cls, sids: np.ndarray) -> SidTrie:
        """Tables for (N, P) unique SIDs; item i is row i."""
        n, positions = sids.shape
        vocab = tuple(int(v) for v in sids.max(axis=0) + 1)
        state = np.zeros(n, dtype=np.int64)
        n_states = 1
        children = []
        for pos in range(positions):
            table = np.full((n_states, vocab[pos]), -1, dtype=np.int32)
            if pos == positions - 1:
                table[state, sids[:, pos]] = np.arange(n, dtype=np.int32)
            else:
                keys, nxt = np.unique(state * vocab[pos] + sids[:, pos], return_inverse=True)
                table[keys // vocab[pos], keys % vocab[pos]] = np.arange(len(keys), dtype=np.int32)
                state, n_states = nxt.ravel(), len(keys)
            children.append(table)
        return cls(vocab, children)

    def lookup(self, sids: np.ndarray) -> np.ndarray:
        """(B, P) SIDs -> (B,) item ids, -1 where the SID is not a real item's."""
        sids = np.asarray(sids, dtype=np.int64)
        state = np.zeros(len(sids), dtype=np.int64)
        for pos, table in enumerate(self.children):
            code = sids[:, pos]
            ok = (state >= 0) & (code >= 0) & (code < table.shape[1])
            nxt = np.full(len(sids), -1, dtype=np.int64)
            nxt[ok] = table[state[ok], code[ok]]
            state = nxt
        return state

    def enumerate(self) -> np.ndarray:
        """Every SID the tables accept (rows ordered by item id): (N, P)."""
        prefixes = np.zeros((1, 0), dtype=np.int64)
        state = np.zeros(1, dtype=np.int64)
        for table in self.children:
            rows, codes = np.nonzero(table[state] >= 0)
            prefixes = np.concatenate([prefixes[rows], codes[:, None]], axis=1)
            state = table[state[rows], codes].astype(np.int64)
        out = np.empty_like(prefixes)
        out[state] = prefixes
        return out

    def save(self, path: Path) -> None:
        arrays = {f"children_{i}": t for i, t in enumerate(self.children)}
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, vocab=np.asarray(self.vocab), **arrays)

    @classmethod
    def load(cls, path: Path) -> SidTrie:
        with np.load(path) as data:
            vocab = tuple(int(v) for v in data["vocab"])
            return cls(vocab, [data[f"children_{i}"] for i in range(len(vocab))])


def code_clusters(
    codebooks: np.ndarray, n_clusters: int, seed: int, metric: str = "euclidean"
) -> tuple[np.ndarray, np.ndarray]:
    """k-means over each level's codewords: (L, K, d) -> cluster of every code (L, K), centroids (L, K_c, d).

    ``metric='cosine'``: spherical k-means (unit centroids, assignment by cosine), so every code's
    cluster is the one L_Align's cosine score ranks first.
    """
    assign, centroids = [], []
    for level, book in enumerate(codebooks):
        c, a = kmeans(book, n_clusters, seed + level, spherical=metric == "cosine")
        centroids.append(c)
        assign.append(a)
    return np.stack(assign), np.stack(centroids)


def cosine_mismatch(codebooks: np.ndarray, assign: np.ndarray, centroids: np.ndarray) -> float:
    """Share of codewords whose highest-cosine centroid is not their own cluster's: (L, K, d),
    (L, K), (L, K_c, d) -> [0, 1]. 0 for spherical clusters; what Euclidean clusters cost a cosine score.

    >>> books = np.array([[[1.0, 0.0], [10.0, 1.0]]])
    >>> cosine_mismatch(books, np.array([[0, 1]]), np.array([[[0.0, 1.0], [10.0, 1.0]]]))
    0.5
    """
    unit = codebooks / np.maximum(np.linalg.norm(codebooks, axis=-1, keepdims=True), 1e-12)
    cents = centroids / np.maximum(np.linalg.norm(centroids, axis=-1, keepdims=True), 1e-12)
    best = np.einsum("lkd,lcd->lkc", unit, cents).argmax(-1)
    return float((best != assign).mean())


def load_sids(path: Path, n_items: int) -> np.ndarray:
    """(N, P) SIDs from ``sids.parquet``, row i = item i."""
    frame = pd.read_parquet(path).sort_values("item_id")
    if len(frame) != n_items or not np.array_equal(frame["item_id"].to_numpy(), np.arange(n_items)):
        raise ValueError(f"{path}: SIDs for {len(frame)} items, the catalogue has {n_items}; re-run the sids stage")
    return np.stack(frame["sid"].map(np.asarray).to_numpy()).astype(np.int64)


def changed_share(previous: np.ndarray | None, current: np.ndarray) -> float | None:
    """Share of items whose SID differs from the previous run's (None when there is no comparable run)."""
    if previous is None or previous.shape != current.shape:
        return None
    return float((previous != current).any(axis=1).mean())
