"""Leave-one-out on hand-written sequences."""

from __future__ import annotations

import pandas as pd
import pytest

from s2gr_core.split import leave_one_out, ragged, split_stats


def frame(sequences: dict[int, list[int]], shuffle: bool = True) -> pd.DataFrame:
    rows = [(u, item, pos) for u, seq in sequences.items() for pos, item in enumerate(seq)]
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "position"])
    return df.sample(frac=1.0, random_state=0) if shuffle else df


def test_leave_one_out_targets_and_histories() -> None:
    split = leave_one_out(frame({0: [5, 7, 9, 4], 1: [1, 2, 3], 2: [8, 6, 4, 2, 0]}), max_history=2)
    assert split.train.to_pydict() == {"user_id": [0, 1, 2], "item_ids": [[5, 7], [1], [8, 6, 4]]}
    assert split.valid.to_pydict() == {"user_id": [0, 1, 2], "history": [[5, 7], [1], [6, 4]], "target": [9, 2, 2]}
    assert split.test.to_pydict() == {"user_id": [0, 1, 2], "history": [[7, 9], [1, 2], [4, 2]], "target": [4, 3, 0]}


def test_history_window_is_the_most_recent_items() -> None:
    seq = list(range(30))
    split = leave_one_out(frame({0: seq}), max_history=20)
    assert split.test.column("history").to_pylist()[0] == list(range(9, 29))
    assert split.valid.column("history").to_pylist()[0] == list(range(8, 28))
    assert split.train.column("item_ids").to_pylist()[0] == list(range(28))


def test_users_with_fewer_than_three_items_are_refused() -> None:
    with pytest.raises(ValueError, match=r"user_id 1 has 2 interaction\(s\); leave-one-out needs >= 3"):
        leave_one_out(frame({0: [1, 2, 3], 1: [4, 5]}), max_history=5)


def test_null_ids_are_refused() -> None:
    df = frame({0: [1, 2, 3]}, shuffle=False).astype({"item_id": "Int32"})
    df.loc[1, "item_id"] = pd.NA
    with pytest.raises(ValueError, match="null"):
        leave_one_out(df, max_history=5)


def test_stats_count_everything_once() -> None:
    split = leave_one_out(frame({0: [5, 7, 9, 4], 1: [1, 2, 3]}), max_history=20)
    stats = split_stats(split, n_items=10)
    assert stats["users"] == 2
    assert stats["interactions"] == 7
    assert stats["train_interactions"] == 3
    assert stats["train_examples"] == 1  # prefixes of [5, 7] -> one (5 -> 7); [1] -> none
    assert stats["avg_seq_len"] == 3.5
    assert stats["density"] == round(7 / 20, 6)


def test_ragged_gathers_slices() -> None:
    import numpy as np

    out = ragged(np.array([10, 11, 12, 13, 14]), np.array([0, 1, 4]), np.array([2, 4, 4]))
    assert out.to_pylist() == [[10, 11], [11, 12, 13], []]
