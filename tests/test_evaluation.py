"""Metrics against hand computations; the strict prediction reader; paired comparison; report."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from s2gr_core.evaluation.compare import compare
from s2gr_core.evaluation.metrics import coverage, mean_metrics, per_user_metrics, target_ranks
from s2gr_core.evaluation.predictions import PredictionError, predictions_table, read_predictions, write_predictions
from s2gr_core.evaluation.report import latest_per_seed, summary_table, to_markdown
from s2gr_core.models.common import top_k_items


def test_ranks_and_metrics_by_hand() -> None:
    items = np.array([[4, 2, 9], [1, 2, 3], [7, 8, 6], [5, 0, 3]])
    targets = np.array([4, 3, 1, 0])  # rank 1, rank 3, absent, rank 2
    ranks = target_ranks(items, targets)
    assert ranks.tolist() == [1, 3, 0, 2]
    m = per_user_metrics(ranks, ks=(1, 2, 5))
    assert m["recall_at_1"].tolist() == [1, 0, 0, 0]
    assert m["recall_at_2"].tolist() == [1, 0, 0, 1]
    assert m["recall_at_5"].tolist() == [1, 1, 0, 1]
    assert np.allclose(m["ndcg_at_5"], [1.0, 1 / math.log2(4), 0.0, 1 / math.log2(3)])
    means = mean_metrics(m)
    assert means["recall_at_5"] == pytest.approx(0.75)  # the absent target counts as 0, not dropped
    assert means["ndcg_at_1"] == pytest.approx(0.25)


def test_k_larger_than_the_list_and_single_user() -> None:
    ranks = target_ranks(np.array([[3, 1]]), np.array([1]))
    m = mean_metrics(per_user_metrics(ranks, ks=(1, 20)))
    assert m == {
        "recall_at_1": 0.0,
        "ndcg_at_1": 0.0,
        "recall_at_20": 1.0,
        "ndcg_at_20": pytest.approx(1 / math.log2(3)),
    }


def test_coverage() -> None:
    assert coverage(np.array([[1, 2], [2, 3]]), n_items=10, k=1) == pytest.approx(0.2)
    assert coverage(np.array([[1, 2], [2, 3]]), n_items=10, k=2) == pytest.approx(0.3)


def test_top_k_breaks_ties_by_item_id_and_excludes() -> None:
    scores = torch.tensor([[0.5, 0.9, 0.9, 0.1, 0.9], [1.0, 1.0, 1.0, 1.0, 1.0]])
    items, top = top_k_items(scores, 3)
    assert items.tolist() == [[1, 2, 4], [0, 1, 2]]
    assert top[0].tolist() == pytest.approx([0.9, 0.9, 0.9])
    items, _ = top_k_items(scores, 2, exclude=torch.tensor([[1, -1], [0, 2]]))
    assert items.tolist() == [[2, 4], [1, 3]]


def _write(path: Path, rows: list[tuple[int, int, int]]) -> Path:
    users, ranks, items = zip(*rows, strict=True)
    table = pa.table(
        {
            "user_id": pa.array(users, pa.int32()),
            "rank": pa.array(ranks, pa.int32()),
            "item_id": pa.array(items, pa.int32()),
            "score": pa.array([0.0] * len(rows), pa.float32()),
        }
    )
    pq.write_table(table, path)
    return path


def good_rows() -> list[tuple[int, int, int]]:
    return [(u, r, (u + r) % 6) for u in (0, 1) for r in (1, 2, 3)]


def test_reader_aligns_rows_to_split_users(tmp_path: Path) -> None:
    path = tmp_path / "p.parquet"
    write_predictions(path, np.array([1, 0]), np.array([[5, 4, 3], [0, 1, 2]]), np.zeros((2, 3)))
    lists = read_predictions(path, np.array([0, 1]), n_items=6, min_k=3)
    assert lists.items.tolist() == [[0, 1, 2], [5, 4, 3]]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            [(u, r, 99 if (u, r) == (1, 2) else i) for u, r, i in good_rows()],
            r"not in the catalogue of 6; e.g. user_id 1 rank 2: item_id 99",
        ),
        (
            [(u, r, 2 if (u, r) == (0, 3) else i) for u, r, i in good_rows()],
            r"duplicates within a list; e.g. user_id 0 lists item_id 2 at ranks \[2, 3\]",
        ),
        ([row for row in good_rows() if row[0] == 0], r"no list for 1 of 2 user\(s\), e.g. user_id \[1\]"),
        ([*good_rows(), (7, 1, 0), (7, 2, 1), (7, 3, 2)], r"1 user\(s\) not in the split, e.g. user_id \[7\]"),
        ([(u, r + 1 if (u, r) == (0, 3) else r, i) for u, r, i in good_rows()], r"ranks of user_id 0 are not 1..3"),
        ([row for row in good_rows() if row[1] < 3], r"lists hold 2 items; at least 3 are needed"),
    ],
    ids=["unknown item", "duplicate item", "missing user", "unknown user", "rank gap", "short lists"],
)
def test_reader_rejects_bad_files(tmp_path: Path, rows: list, message: str) -> None:
    with pytest.raises(PredictionError, match=message):
        read_predictions(_write(tmp_path / "p.parquet", rows), np.array([0, 1]), n_items=6, min_k=3)


def test_predictions_table_layout() -> None:
    table = predictions_table(np.array([3]), np.array([[7, 8]]), np.array([[0.5, 0.25]]))
    assert table.to_pydict() == {"user_id": [3, 3], "rank": [1, 2], "item_id": [7, 8], "score": [0.5, 0.25]}


def per_user(values: list[float], users: list[int] | None = None) -> pd.DataFrame:
    users = users or list(range(len(values)))
    return pd.DataFrame({"user_id": users, "split": "test", "ndcg_at_10": values})


def test_compare_identical_and_better_runs() -> None:
    rng = np.random.default_rng(0)
    a = rng.random(400)
    (same,) = compare(per_user(a.tolist()), per_user(a.tolist()), ["ndcg_at_10"], n_boot=500)
    assert same.delta == 0 and same.ci_low == 0 and same.ci_high == 0 and same.p_value == 1.0
    (better,) = compare(per_user(a.tolist()), per_user((a + 0.05).tolist()), ["ndcg_at_10"], n_boot=500)
    assert better.delta == pytest.approx(0.05) and better.ci_low > 0 and better.p_value < 1e-6


def test_compare_refuses_different_users() -> None:
    with pytest.raises(ValueError, match=r"scored different users on test: 2 user\(s\) in only one run"):
        compare(per_user([0.1, 0.2], [0, 1]), per_user([0.1, 0.2], [0, 2]), ["ndcg_at_10"])


def test_report_takes_latest_run_per_seed_and_std_over_seeds() -> None:
    def rec(seed: int, t: float, v: float) -> dict:
        return {
            "model": "sasrec",
            "seed": seed,
            "run_id": f"r{seed}{t}",
            "start_time": t,
            "metrics": {"test.ndcg_at_10": v, "test.recall_at_10": v * 2},
        }

    records = [rec(0, 1.0, 0.10), rec(0, 2.0, 0.20), rec(1, 1.5, 0.30)]  # seed 0 was re-run: 0.20 counts
    table = summary_table(latest_per_seed(records))
    row = table.iloc[0]
    assert row["seeds"] == 2
    assert row["ndcg_at_10_mean"] == pytest.approx(0.25)
    assert row["ndcg_at_10_std"] == pytest.approx(np.std([0.2, 0.3], ddof=1))
    assert "| sasrec | 2 |" in to_markdown(table, "ml-100k") and "±" in to_markdown(table, "ml-100k")


def test_report_pools_only_seeds_of_the_latest_configuration() -> None:
    def rec(seed: int, t: float, v: float, config: str | None) -> dict:
        return {
            "model": "sasrec",
            "seed": seed,
            "config": config,
            "run_id": f"r{t}",
            "start_time": t,
            "metrics": {"test.ndcg_at_10": v},
        }

    # seed 1 ran under an older configuration (and one run predates fingerprints): neither pools with "b"
    records = [rec(1, 1.0, 0.9, None), rec(1, 2.0, 0.8, "a"), rec(0, 3.0, 0.2, "b"), rec(2, 4.0, 0.4, "b")]
    table = summary_table(latest_per_seed(records))
    row = table.iloc[0]
    assert (row["seeds"], row["config"]) == (2, "b")
    assert row["ndcg_at_10_mean"] == pytest.approx(0.3)
    old = summary_table(latest_per_seed(records[:1]))
    assert old.iloc[0]["seeds"] == 1 and old.iloc[0]["ndcg_at_10_mean"] == pytest.approx(0.9)
