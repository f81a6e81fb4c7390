"""Evaluation stages: ``evaluate_<model>`` (one per model) and ``report``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from s2gr_core.config import Params
from s2gr_core.evaluation.metrics import coverage, mean_metrics, per_user_metrics, target_ranks
from s2gr_core.evaluation.predictions import PredictionError, read_predictions
from s2gr_core.evaluation.report import REPORT_METRICS, write_report
from s2gr_core.io import write_json, write_parquet
from s2gr_core.split import load_eval
from s2gr_core.stages import model_config
from s2gr_core.stages.base import Reporter, StageFailed, StageResult

SPLITS = ("valid", "test")


def model_seed(params: Params, model: str) -> int | None:
    section = getattr(params, model, None)
    return getattr(section, "seed", None)


def flatten_splits(summary: dict) -> dict[str, float]:
    """``{"test": {"ndcg_at_10": x}}`` -> ``{"test.ndcg_at_10": x}``: the names MLflow and the report use."""
    return {f"{s}.{k}": v for s in SPLITS for k, v in summary[s].items()}


def evaluate_stage(
    params: Params,
    *,
    model: str,
    predictions: Path,
    items: Path,
    valid: Path,
    test: Path,
    per_user: Path,
    metrics: Path,
) -> StageResult:
    """Recall@K / NDCG@K (full ranking, all users) of one model's lists on valid and test."""
    ks = params.evaluate.ks
    n_items = pq.read_metadata(items).num_rows
    frames, summary = [], {}
    for split, path in zip(SPLITS, (valid, test), strict=True):
        user_ids, _, targets = load_eval(str(path))
        try:
            lists = read_predictions(predictions / f"{split}.parquet", user_ids, n_items, max(ks))
        except PredictionError as exc:
            raise StageFailed(f"{model}: {exc}") from exc
        ranks = target_ranks(lists.items, targets)
        pu = per_user_metrics(ranks, ks)
        summary[split] = {**mean_metrics(pu), "users": len(user_ids)}
        frames.append(pd.DataFrame({"user_id": user_ids, "split": split, "target": targets, "rank": ranks, **pu}))
    test_lists = lists.items  # the loop ends on the test split
    summary.update(
        {
            **{f"coverage_at_{k}": coverage(test_lists, n_items, k) for k in ks if k <= test_lists.shape[1]},
            # read_predictions fails the stage on any invalid or repeated item, so these are 0 by construction
            "invalid_share": 0.0,
            "duplicate_share": 0.0,
            "list_length": int(test_lists.shape[1]),
        }
    )
    write_parquet(pd.concat(frames, ignore_index=True), per_user)
    write_json(summary, metrics)
    flat = {**flatten_splits(summary), **{k: v for k, v in summary.items() if k not in SPLITS}}
    t = summary["test"]
    shown = "  ".join(f"{m[0].upper()}@{k} {t[f'{m}_at_{k}']:.4f}" for m in ("recall", "ndcg") for k in ks if k > 1)
    return StageResult(
        metrics=flat,
        tags={
            "model": model,
            "seed": model_seed(params, model),
            "config": model_config(params, model),
            "exclude_history": params.inference.exclude_history,
        },
        artifacts=[metrics, per_user],
        summary=f"{model} test: {shown}  ({t['users']:,} users)",
    )


def report_stage(
    params: Params, *, table: Path, csv: Path, chart: Path, reporter: Reporter, **evaluations: Path
) -> StageResult:
    """Table (Markdown, CSV) and bar chart of test metrics per model, mean ± std over seeds.

    ``evaluations`` maps ``<model>_metrics`` to that model's evaluate metrics file; the
    tracking layer's history adds earlier runs (other seeds) of the same dataset.
    """
    dataset = params.data.name
    records = reporter.evaluation_history(dataset)
    now = time.time()
    for key, path in evaluations.items():
        model = key.removesuffix("_metrics")
        data = json.loads(path.read_text(encoding="utf-8"))
        records.append(
            {
                "model": model,
                "seed": model_seed(params, model),
                "config": model_config(params, model),
                "run_id": "workspace",
                "start_time": now,
                "metrics": flatten_splits(data),
            }
        )
    try:
        summary, markdown = write_report(records, dataset, table, csv, chart)
    except ValueError as exc:
        raise StageFailed(str(exc)) from exc
    return StageResult(
        metrics={f"{r['model']}.{m}": r[f"{m}_mean"] for _, r in summary.iterrows() for m in REPORT_METRICS},
        artifacts=[table, csv, chart],
        summary="\n" + markdown,
    )
