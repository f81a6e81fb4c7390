"""Data-quality gate with Great Expectations 1.x (ephemeral context, suites in code).

Three batches are validated: ``interactions``, ``items`` and a derived
``user_counts`` table (interactions per user, for the k-core check). Every
expectation carries a severity: a failed *critical* expectation fails the stage;
a failed *warning* is reported and the pipeline goes on.

Example of a failure message::

    interactions.item_key: values must exist in items.item_key -- 1 of 12 rows fail,
    e.g. raw line 7 of ml-100k.inter (user_key='3', item_key='999')
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from s2gr_core.config import ValidateConfig

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

CRITICAL = "critical"
WARNING = "warning"

INTERACTION_COLUMNS = ["user_id", "item_id", "position", "user_key", "item_key", "source_line"]
ITEM_COLUMNS = ["item_id", "item_key", "title", "text", "source_line"]


@dataclass(slots=True)
class CheckResult:
    table: str
    expectation: str
    column: str | None
    rule: str  # plain-language statement of what must hold
    severity: str
    success: bool
    unexpected_count: int = 0
    element_count: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)
    observed: Any = None

    def message(self, source: str | None) -> str:
        where = f"{self.table}.{self.column}" if self.column else self.table
        text = f"{where}: {self.rule}"
        if self.unexpected_count:
            text += f" -- {self.unexpected_count} of {self.element_count} rows fail"
        if self.observed is not None and not self.examples:
            text += f" (observed: {self.observed})"
        if self.examples:
            shown = []
            for ex in self.examples:
                line = ex.get("source_line")
                # identifying keys first: "(user_key='99', n_interactions=3)"
                fields = sorted(
                    (kv for kv in ex.items() if kv[0] != "source_line"), key=lambda kv: not kv[0].endswith("_key")
                )
                rest = ", ".join(f"{k}={v!r}" for k, v in fields)
                prefix = f"raw line {line} of {source}" if line is not None and source else "row"
                shown.append(f"{prefix} ({rest})")
            text += ", e.g. " + "; ".join(shown)
        return text


@dataclass(slots=True)
class ValidationReport:
    dataset: str
    sources: dict[str, str]  # table -> raw file its source_line refers to
    checks: list[CheckResult]
    row_counts: dict[str, int]

    @property
    def failures(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.success and c.severity == CRITICAL]

    @property
    def warnings(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.success and c.severity == WARNING]

    @property
    def success(self) -> bool:
        return not self.failures

    def messages(self, checks: list[CheckResult]) -> list[str]:
        return [c.message(self.sources.get(c.table)) for c in checks]

    def metrics(self) -> dict[str, int]:
        return {
            "expectations": len(self.checks),
            "failed": len(self.failures),
            "warnings": len(self.warnings),
            **{f"rows_{k}": v for k, v in self.row_counts.items()},
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "success": self.success,
            "summary": self.metrics(),
            "failures": self.messages(self.failures),
            "warnings": self.messages(self.warnings),
            "checks": [asdict(c) for c in self.checks],
        }

    def to_markdown(self) -> str:
        status = "PASSED" if self.success else "FAILED"
        lines = [
            f"# Data validation: {self.dataset} -- {status}",
            "",
            f"{len(self.checks)} expectations, {len(self.failures)} failed, {len(self.warnings)} warnings. "
            + ", ".join(f"{k}: {v:,} rows" for k, v in self.row_counts.items()),
            "",
            "| table | column | rule | severity | result | failing rows |",
            "|---|---|---|---|---|---|",
        ]
        for c in self.checks:
            result = "ok" if c.success else ("FAIL" if c.severity == CRITICAL else "warn")
            lines.append(
                f"| {c.table} | {c.column or ''} | {c.rule} | {c.severity} | {result} | {c.unexpected_count} |"
            )
        for title, checks in (("Failures", self.failures), ("Warnings", self.warnings)):
            if checks:
                lines += ["", f"## {title}", ""] + [f"- {m}" for m in self.messages(checks)]
        return "\n".join(lines) + "\n"


class _Suite:
    """Collects (expectation, rule text, severity) triples for one table."""

    def __init__(self, table: str, index_columns: list[str]):
        self.table = table
        self.index_columns = index_columns
        self.items: list[tuple[Any, str, str]] = []

    def add(self, expectation: Any, rule: str, severity: str = CRITICAL) -> None:
        expectation.severity = severity
        self.items.append((expectation, rule, severity))


def _interaction_suite(
    n_users: int,
    n_items: int,
    item_keys: list[str],
    has_timestamps: bool = False,
    has_ratings: bool = False,
    rating_range: tuple[float, float] = (1, 5),
) -> _Suite:
    """``has_timestamps`` / ``has_ratings``: the file carries that column for some rows (MovieLens
    does, P5 Beauty does not), so every row must: a row without a timestamp would be sorted to
    the end of its user's sequence without a word."""
    import great_expectations.expectations as E

    s = _Suite("interactions", ["source_line", "user_key", "item_key"])
    s.add(
        E.ExpectTableColumnsToMatchSet(column_set=INTERACTION_COLUMNS, exact_match=False),
        f"must have columns {INTERACTION_COLUMNS}",
    )
    s.add(E.ExpectTableRowCountToBeBetween(min_value=1), "must not be empty")
    for col in ("user_key", "item_key", "user_id", "position"):
        s.add(E.ExpectColumnValuesToNotBeNull(column=col), "must not be null")
    s.add(
        E.ExpectColumnValuesToBeBetween(column="user_id", min_value=0, max_value=max(n_users - 1, 0)),
        f"ids must lie in [0, {n_users - 1}]",
    )
    s.add(
        E.ExpectColumnValuesToBeBetween(column="item_id", min_value=0, max_value=max(n_items - 1, 0)),
        f"ids must lie in [0, {n_items - 1}]",
    )
    s.add(E.ExpectColumnValuesToBeBetween(column="position", min_value=0), "positions must be >= 0")
    s.add(E.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "position"]), "(user_id, position) must be unique")
    s.add(E.ExpectColumnValuesToBeInSet(column="item_key", value_set=item_keys), "values must exist in items.item_key")
    if has_timestamps:
        s.add(
            E.ExpectColumnValuesToNotBeNull(column="timestamp"),
            "every row needs a timestamp when the file has them (sequences are ordered by it)",
        )
        s.add(
            E.ExpectColumnValuesToBeBetween(column="timestamp", min_value=0), "timestamps (Unix seconds) must be >= 0"
        )
    if has_ratings:
        # ratings are not used by the models (implicit feedback), so a gap is reported, not fatal
        s.add(
            E.ExpectColumnValuesToNotBeNull(column="rating"),
            "every row should have a rating when the file has them",
            WARNING,
        )
        low, high = rating_range
        s.add(  # unused, but a 9 on a 1-5 scale or a negative rating means a corrupt or mislabelled drop
            E.ExpectColumnValuesToBeBetween(column="rating", min_value=low, max_value=high),
            f"ratings must lie in [{low:g}, {high:g}] (validate.rating_range)",
        )
    return s


def _item_suite(n_items: int, text_severity: str) -> _Suite:
    import great_expectations.expectations as E

    s = _Suite("items", ["source_line", "item_key"])
    s.add(
        E.ExpectTableColumnsToMatchSet(column_set=ITEM_COLUMNS, exact_match=False), f"must have columns {ITEM_COLUMNS}"
    )
    s.add(E.ExpectTableRowCountToBeBetween(min_value=1), "must not be empty")
    for col in ("item_key", "item_id"):
        s.add(E.ExpectColumnValuesToNotBeNull(column=col), "must not be null")
    s.add(E.ExpectColumnValuesToBeUnique(column="item_id"), "item ids must be unique (one row per item)")
    s.add(
        E.ExpectColumnValuesToBeBetween(column="item_id", min_value=0, max_value=max(n_items - 1, 0)),
        f"ids must lie in [0, {n_items - 1}]",
    )
    s.add(E.ExpectColumnValuesToNotBeNull(column="title"), "items should have a title", text_severity)
    s.add(E.ExpectColumnValuesToNotBeNull(column="text"), "items must have non-empty text", text_severity)
    return s


def _user_suite(min_interactions: int) -> _Suite:
    import great_expectations.expectations as E

    s = _Suite("user_counts", ["user_key"])
    s.add(
        E.ExpectColumnValuesToBeBetween(column="n_interactions", min_value=min_interactions),
        f"every user needs at least {min_interactions} interactions (k-core)",
    )
    return s


def _run_suite(context: Any, suite: _Suite, frame: pd.DataFrame, max_examples: int) -> list[CheckResult]:
    import great_expectations as gx

    source = context.data_sources.add_pandas(f"{suite.table}_source")
    batch_def = source.add_dataframe_asset(suite.table).add_batch_definition_whole_dataframe("all")
    gx_suite = context.suites.add(gx.ExpectationSuite(name=f"{suite.table}_suite"))
    for expectation, _, _ in suite.items:
        gx_suite.add_expectation(expectation)
    batch = batch_def.get_batch(batch_parameters={"dataframe": frame})
    index_columns = [c for c in suite.index_columns if c in frame.columns]
    result = batch.validate(
        gx_suite,
        result_format={
            "result_format": "COMPLETE",
            "partial_unexpected_count": max_examples,
            "unexpected_index_column_names": index_columns,
            "return_unexpected_index_query": False,
        },
    )
    by_type: dict[tuple[str, str | None], tuple[str, str]] = {}
    for expectation, rule, severity in suite.items:
        cfg = expectation.configuration
        by_type[(cfg.type, cfg.kwargs.get("column"))] = (rule, severity)
    checks = []
    for r in result.results:
        cfg = r.expectation_config
        column = cfg.kwargs.get("column")
        rule, severity = by_type[(cfg.type, column)]
        res = r.result or {}
        examples = [
            {k: _plain(v) for k, v in row.items()} for row in (res.get("unexpected_index_list") or [])[:max_examples]
        ]
        observed = res.get("observed_value")
        if r.exception_info and r.exception_info.get("raised_exception"):
            observed = r.exception_info.get("exception_message")
        if "details" in res and res["details"].get("mismatched"):
            observed = res["details"]["mismatched"]
        checks.append(
            CheckResult(
                table=suite.table,
                expectation=cfg.type,
                column=column,
                rule=rule,
                severity=severity,
                success=bool(r.success),
                unexpected_count=int(res.get("unexpected_count") or 0),
                element_count=int(res.get("element_count") or len(frame)),
                examples=examples,
                observed=_plain(observed) if not r.success else None,
            )
        )
    return checks


def _plain(value: Any) -> Any:
    if value is None or value is pd.NA:
        return None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value


def validate_tables(
    interactions: pd.DataFrame,
    items: pd.DataFrame,
    cfg: ValidateConfig,
    dataset: str,
    sources: dict[str, str] | None = None,
) -> ValidationReport:
    """Run every suite and collect one report (never raises for bad data)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)

    has_keys = {"user_key", "item_key"} <= set(interactions.columns) and "item_key" in items.columns
    n_items = len(items)
    n_users = int(interactions["user_key"].nunique()) if "user_key" in interactions else 0
    item_keys = items["item_key"].dropna().astype(str).unique().tolist() if "item_key" in items else []

    present = {c: c in interactions and bool(interactions[c].notna().any()) for c in ("timestamp", "rating")}
    suite = _interaction_suite(
        n_users, n_items, item_keys, present["timestamp"], present["rating"], tuple(cfg.rating_range)
    )
    checks = _run_suite(context, suite, interactions, cfg.max_examples)
    checks += _run_suite(
        context, _item_suite(n_items, WARNING if cfg.empty_text == "warn" else CRITICAL), items, cfg.max_examples
    )
    row_counts = {"interactions": len(interactions), "items": n_items}
    if has_keys:
        counts = interactions.groupby("user_key", dropna=True).size().rename("n_interactions").reset_index()
        checks += _run_suite(context, _user_suite(cfg.min_user_interactions), counts, cfg.max_examples)
        row_counts["users"] = len(counts)
    return ValidationReport(dataset=dataset, sources=sources or {}, checks=checks, row_counts=row_counts)
