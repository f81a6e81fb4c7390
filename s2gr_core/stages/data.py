"""Data stages: fetch -> ingest -> validate -> split."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from s2gr_core.config import Params, data_source_dir
from s2gr_core.data import get_dataset
from s2gr_core.data.fetch import fetch, read_manifest
from s2gr_core.data.tables import INTERACTIONS_SCHEMA, ITEMS_SCHEMA
from s2gr_core.data_docs import render_html
from s2gr_core.io import atomic_path, write_json, write_parquet, write_text
from s2gr_core.split import EVAL_SCHEMA, TRAIN_SCHEMA, leave_one_out, split_stats
from s2gr_core.stages.base import StageFailed, StageResult
from s2gr_core.validation import validate_tables


def fetch_stage(params: Params, *, raw: Path) -> StageResult:
    """Copy the dataset's raw files from the local data directory, or download them."""
    spec = get_dataset(params.data.name)
    result = fetch(spec, data_source_dir(params.data), raw)
    note = "" if result.canonical else " (differs from the canonical public release: a new data drop?)"
    return StageResult(
        metrics={"raw_bytes": float(sum(int(f["bytes"]) for f in result.files.values()))},
        tags={"source": result.source, "canonical": result.canonical},
        summary=f"{spec.name}: {len(result.files)} file(s) from {result.source}{note}",
    )


def ingest_stage(params: Params, *, raw: Path, interactions: Path, items: Path) -> StageResult:
    """Parse raw files into the typed ``interactions`` and ``items`` Parquet tables, staged for the
    validate gate (downstream stages read only what the gate published)."""
    manifest = read_manifest(raw)
    if manifest.get("dataset") != params.data.name:
        raise StageFailed(
            f"{raw}: holds {manifest.get('dataset')!r} but params.yaml data.name is {params.data.name!r}; "
            "re-run the fetch stage (dvc repro fetch)"
        )
    tables = get_dataset(params.data.name).parse(raw)
    write_parquet(tables.items, items, ITEMS_SCHEMA)
    write_parquet(tables.interactions, interactions, INTERACTIONS_SCHEMA)
    n_i, n_it = len(tables.interactions), len(tables.items)
    return StageResult(
        metrics={"interactions_rows": n_i, "items_rows": n_it},
        summary=f"{params.data.name}: {n_i:,} interactions, {n_it:,} items",
    )


def validate_stage(
    params: Params,
    *,
    staged_interactions: Path,
    staged_items: Path,
    interactions: Path,
    items: Path,
    report: Path,
    summary: Path,
    html: Path,
    metrics: Path,
) -> StageResult:
    """Great Expectations gate on the staged tables; only tables that pass are published.

    On success the staged tables become ``interactions`` / ``items`` (what every later stage
    reads). On failure: exit non-zero and keep the last good processed tables and reports, so
    a rejected drop changes nothing downstream and ``dvc status`` shows the gate as the stage
    to re-run. ``html`` is the same report as a page (``s2gr_core.data_docs``). The failing
    report goes to ``validation_failed.{json,md,html}`` beside ``report`` (and to MLflow), never
    over the last passing one.
    """
    spec = get_dataset(params.data.name)
    rep = validate_tables(
        _scalar_columns(pd.read_parquet(staged_interactions)),
        _scalar_columns(pd.read_parquet(staged_items)),
        params.validate,
        spec.name,
        spec.sources,
    )
    failed_json = report.with_name("validation_failed.json")
    failed_md = report.with_name("validation_failed.md")
    failed_html = html.with_name("validation_failed.html")
    if not rep.success:
        write_json(rep.to_dict(), failed_json)
        write_text(rep.to_markdown(), failed_md)
        write_text(render_html(rep), failed_html)
        lines = "\n".join(f"  - {m}" for m in rep.messages(rep.failures))
        raise StageFailed(
            f"data validation failed for {spec.name}: {len(rep.failures)} expectation(s) failed:\n{lines}\n"
            f"Full report: {failed_md}. Downstream stages were not run; their last good outputs are kept.",
            artifacts=[failed_json, failed_md, failed_html],
        )
    for staged, published in ((staged_items, items), (staged_interactions, interactions)):
        with atomic_path(published) as tmp:
            shutil.copyfile(staged, tmp)
    for stale in (failed_json, failed_md, failed_html):
        stale.unlink(missing_ok=True)
    write_json(rep.to_dict(), report)
    write_text(rep.to_markdown(), summary)
    write_text(render_html(rep), html)
    write_json(rep.metrics(), metrics)
    warn = "".join(f"\n  warning: {m}" for m in rep.messages(rep.warnings))
    return StageResult(
        metrics=rep.metrics(),
        artifacts=[report, summary, html],
        summary=f"{len(rep.checks)} expectations passed, {len(rep.warnings)} warning(s){warn}",
    )


def _scalar_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Drop nested (list) columns: no expectation reads them and GX cannot type them."""
    nested = [c for c in frame.columns if isinstance(frame[c].dtype, pd.ArrowDtype)]
    return frame.drop(columns=nested)


def split_stage(
    params: Params,
    *,
    interactions: Path,
    items: Path,
    report: Path,
    train: Path,
    valid: Path,
    test: Path,
    metrics: Path,
) -> StageResult:
    """Leave-one-out split of validated interactions, plus ``metrics/data.json``."""
    if not json.loads(report.read_text(encoding="utf-8")).get("success"):
        raise StageFailed(f"{report}: the data did not pass validation; refusing to split it")
    split = leave_one_out(pd.read_parquet(interactions), params.split.max_history)
    n_items = pq.read_metadata(items).num_rows
    stats = split_stats(split, n_items)
    write_parquet(split.train, train, TRAIN_SCHEMA)
    write_parquet(split.valid, valid, EVAL_SCHEMA)
    write_parquet(split.test, test, EVAL_SCHEMA)
    write_json(stats, metrics)
    return StageResult(
        metrics=stats,
        artifacts=[metrics],
        summary=(
            f"{stats['users']:,} users, {stats['items']:,} items, {stats['interactions']:,} interactions "
            f"(avg length {stats['avg_seq_len']:.2f}); train examples {stats['train_examples']:,}"
        ),
    )
