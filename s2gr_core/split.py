"""Leave-one-out split (METHOD.md §2), vectorised over users.

Per user, in chronological order: last item -> test target, second-to-last ->
validation target, everything before -> training sequence. Validation and test
examples carry the ``max_history`` most recent items before their target (the
test history includes the validation item).

Example (max_history=2), one user with items [5, 7, 9, 4]::

    train:  item_ids=[5, 7]
    valid:  history=[5, 7]  target=9
    test:   history=[7, 9]  target=4
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

TRAIN_SCHEMA = pa.schema([("user_id", pa.int32()), ("item_ids", pa.list_(pa.int32()))])
EVAL_SCHEMA = pa.schema([("user_id", pa.int32()), ("history", pa.list_(pa.int32())), ("target", pa.int32())])


@dataclass(frozen=True, slots=True)
class Split:
    train: pa.Table
    valid: pa.Table
    test: pa.Table


def ragged(values: np.ndarray, starts: np.ndarray, stops: np.ndarray) -> pa.ListArray:
    """Lists ``values[starts[i]:stops[i]]`` for every i, gathered without a Python loop.

    >>> ragged(np.array([1, 2, 3, 4]), np.array([0, 2]), np.array([2, 3])).to_pylist()
    [[1, 2], [3]]
    """
    lengths = (stops - starts).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    # index of element j of list i = starts[i] + (j - offsets[i])
    gather = np.arange(offsets[-1]) - np.repeat(offsets[:-1] - starts, lengths)
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values[gather], pa.int32()))


def leave_one_out(interactions: pd.DataFrame, max_history: int) -> Split:
    """Split an ``interactions`` table (user_id, item_id, position) per METHOD.md §2."""
    if max_history < 1:
        raise ValueError(f"max_history must be >= 1, got {max_history}")
    frame = interactions[["user_id", "item_id", "position"]]
    if frame.isna().any().any():
        raise ValueError("interactions contain null user_id/item_id/position; run the validate stage")
    frame = frame.sort_values(["user_id", "position"], kind="stable")
    users = frame["user_id"].to_numpy(np.int64)
    items = frame["item_id"].to_numpy(np.int32)
    user_ids, starts, counts = np.unique(users, return_index=True, return_counts=True)
    short = counts < 3
    if short.any():
        raise ValueError(
            f"user_id {int(user_ids[short][0])} has {int(counts[short][0])} interaction(s); leave-one-out "
            f"needs >= 3 ({int(short.sum())} such user(s))"
        )
    stops = starts + counts
    valid_pos, test_pos = stops - 2, stops - 1
    uid = pa.array(user_ids, pa.int32())
    train = pa.Table.from_arrays([uid, ragged(items, starts, valid_pos)], schema=TRAIN_SCHEMA)
    valid = pa.Table.from_arrays(
        [uid, ragged(items, np.maximum(starts, valid_pos - max_history), valid_pos), pa.array(items[valid_pos])],
        schema=EVAL_SCHEMA,
    )
    test = pa.Table.from_arrays(
        [uid, ragged(items, np.maximum(starts, test_pos - max_history), test_pos), pa.array(items[test_pos])],
        schema=EVAL_SCHEMA,
    )
    return Split(train=train, valid=valid, test=test)


def split_stats(split: Split, n_items: int) -> dict[str, float | int]:
    """Dataset statistics for ``metrics/data.json`` (numbers only, so DVC can diff them)."""
    train_len = pc.list_value_length(split.train["item_ids"]).to_numpy()
    n_users = split.train.num_rows
    n_interactions = int(train_len.sum()) + 2 * n_users
    test_hist = pc.list_value_length(split.test["history"]).to_numpy()
    return {
        "users": n_users,
        "items": n_items,
        "interactions": n_interactions,
        "avg_seq_len": round(n_interactions / max(n_users, 1), 4),
        "density": round(n_interactions / max(n_users * n_items, 1), 6),
        "train_interactions": int(train_len.sum()),
        "train_examples": int(np.maximum(train_len - 1, 0).sum()),
        "valid_users": split.valid.num_rows,
        "test_users": split.test.num_rows,
        "avg_test_history_len": round(float(test_hist.mean()) if len(test_hist) else 0.0, 4),
    }


def _lists(column: pa.ChunkedArray) -> list[np.ndarray]:
    arr = column.combine_chunks()
    offsets = arr.offsets.to_numpy()
    return np.split(arr.values.to_numpy(zero_copy_only=False).astype(np.int64), offsets[1:-1])


def load_train(path: str) -> tuple[np.ndarray, list[np.ndarray]]:
    """``(user_ids, sequences)`` from ``train.parquet``."""
    table = pq.read_table(path)
    return table["user_id"].to_numpy(), _lists(table["item_ids"])


def load_eval(path: str) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """``(user_ids, histories, targets)`` from ``valid.parquet`` / ``test.parquet``."""
    table = pq.read_table(path)
    return table["user_id"].to_numpy(), _lists(table["history"]), table["target"].to_numpy().astype(np.int64)
