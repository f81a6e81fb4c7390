"""The one prediction format every model writes, and its strict reader.

One Parquet file per split, one row per (user, rank)::

    user_id  rank  item_id  score
    0        1     241      9.31
    0        2     87       9.02
    ...

``rank`` is 1-based and contiguous; every user of the split has the same list
length K (>= the largest metric cut-off). Nothing downstream knows which model
wrote the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from s2gr_core.io import write_parquet

PREDICTION_SCHEMA = pa.schema(
    [("user_id", pa.int32()), ("rank", pa.int32()), ("item_id", pa.int32()), ("score", pa.float32())]
)


class PredictionError(ValueError):
    """A prediction file breaks the format; the message names the file, user and rank."""


def predictions_table(user_ids: np.ndarray, items: np.ndarray, scores: np.ndarray) -> pa.Table:
    """Long table from ``items``/``scores`` of shape (U, K), rows ordered by user then rank."""
    n_users, k = items.shape
    return pa.Table.from_arrays(
        [
            pa.array(np.repeat(user_ids, k).astype(np.int32)),
            pa.array(np.tile(np.arange(1, k + 1, dtype=np.int32), n_users)),
            pa.array(items.reshape(-1).astype(np.int32)),
            pa.array(scores.reshape(-1).astype(np.float32)),
        ],
        schema=PREDICTION_SCHEMA,
    )


def write_predictions(path: Path, user_ids: np.ndarray, items: np.ndarray, scores: np.ndarray) -> None:
    write_parquet(predictions_table(user_ids, items, scores), path, PREDICTION_SCHEMA)


@dataclass(frozen=True, slots=True)
class Lists:
    """Prediction lists aligned to the split's users: ``items[u]`` is the list of ``user_ids[u]``."""

    user_ids: np.ndarray  # (U,)
    items: np.ndarray  # (U, K)


def read_predictions(path: Path, user_ids: np.ndarray, n_items: int, min_k: int) -> Lists:
    """Read and check a prediction file against the split's users and the catalogue.

    Raises :class:`PredictionError` for missing columns, unknown or missing users,
    ragged or non-contiguous ranks, a list shorter than ``min_k``, item ids outside
    the catalogue, or an item repeated within one list.
    """
    if not path.is_file():
        raise PredictionError(f"{path}: prediction file not found")
    table = pq.read_table(path)
    missing = [c for c in PREDICTION_SCHEMA.names if c not in table.column_names]
    if missing:
        raise PredictionError(f"{path}: missing column(s) {missing} (format: {PREDICTION_SCHEMA.names})")
    users = table["user_id"].to_numpy().astype(np.int64)
    ranks = table["rank"].to_numpy().astype(np.int64)
    items = table["item_id"].to_numpy().astype(np.int64)
    order = np.lexsort((ranks, users))
    users, ranks, items = users[order], ranks[order], items[order]
    got, counts = np.unique(users, return_counts=True)
    expected = np.asarray(user_ids, dtype=np.int64)
    unknown = np.setdiff1d(got, expected)
    if len(unknown):
        raise PredictionError(f"{path}: {len(unknown)} user(s) not in the split, e.g. user_id {unknown[:5].tolist()}")
    absent = np.setdiff1d(expected, got)
    if len(absent):
        raise PredictionError(
            f"{path}: no list for {len(absent)} of {len(expected)} user(s), e.g. user_id {absent[:5].tolist()}; "
            "every user must be ranked"
        )
    k = int(counts[0])
    if (counts != k).any():
        bad = got[counts != k][0]
        raise PredictionError(f"{path}: lists differ in length (user_id {bad}: {counts[counts != k][0]}, others {k})")
    if k < min_k:
        raise PredictionError(f"{path}: lists hold {k} items; at least {min_k} are needed (the largest K)")
    rank_matrix = ranks.reshape(-1, k)
    if not (rank_matrix == np.arange(1, k + 1)).all():
        row = int(np.argmax((rank_matrix != np.arange(1, k + 1)).any(axis=1)))
        raise PredictionError(f"{path}: ranks of user_id {got[row]} are not 1..{k}: {rank_matrix[row][:10].tolist()}")
    matrix = items.reshape(-1, k)
    invalid = (matrix < 0) | (matrix >= n_items)
    if invalid.any():
        u, r = np.argwhere(invalid)[0]
        raise PredictionError(
            f"{path}: {invalid.mean():.4%} of listed items are not in the catalogue of {n_items}; e.g. user_id "
            f"{got[u]} rank {r + 1}: item_id {matrix[u, r]}"
        )
    srt = np.sort(matrix, axis=1)
    dup = srt[:, 1:] == srt[:, :-1]
    if dup.any():
        u = int(np.argmax(dup.any(axis=1)))
        item = srt[u, 1:][dup[u]][0]
        raise PredictionError(
            f"{path}: {dup.sum() / matrix.size:.4%} of listed items are duplicates within a list; e.g. user_id "
            f"{got[u]} lists item_id {item} at ranks {(np.flatnonzero(matrix[u] == item) + 1).tolist()}"
        )
    # align rows to the split's user order
    position = np.searchsorted(got, expected)
    return Lists(user_ids=expected, items=matrix[position])
