"""Model comparison report: test metrics of the latest run of each (model, seed), mean ± std over seeds.

Only seeds of one configuration are pooled: each record may carry ``config``, a fingerprint
of every parameter that decides the model's result except its seed, and a model's row uses
the records that share its most recent run's fingerprint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPORT_METRICS = ("recall_at_5", "recall_at_10", "ndcg_at_5", "ndcg_at_10")


def latest_per_seed(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per (model, seed): the most recent record with the configuration of the model's latest record.

    Columns: model, seed, config, run_id, start_time, metrics... A record without ``config``
    (an older run) only pools with others without one.
    """
    columns = ["model", "seed", "config", "run_id", "start_time"]
    if not records:
        return pd.DataFrame(columns=columns)
    rows = [{**{c: r.get(c) for c in columns}, **r["metrics"]} for r in records]
    frame = pd.DataFrame(rows).sort_values("start_time", kind="stable")
    current = frame.groupby("model")["config"].agg(lambda c: c.iloc[-1])
    same = frame["config"].fillna("") == frame["model"].map(current).fillna("")
    frame = frame[same]
    return frame.groupby(["model", "seed"], as_index=False, dropna=False).tail(1).reset_index(drop=True)


def summary_table(latest: pd.DataFrame, metrics: tuple[str, ...] = REPORT_METRICS, split: str = "test") -> pd.DataFrame:
    """Per model: seeds, and mean / std of each ``<split>.<metric>`` (std is NaN with one seed)."""
    out = []
    for model, group in latest.groupby("model", sort=True):
        row: dict[str, Any] = {"model": model, "seeds": len(group), "config": group["config"].iloc[-1]}
        for m in metrics:
            col = f"{split}.{m}"
            values = group[col].to_numpy(float) if col in group else np.array([np.nan])
            row[f"{m}_mean"] = float("nan") if np.isnan(values).all() else float(np.nanmean(values))
            row[f"{m}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
        out.append(row)
    return pd.DataFrame(out)


def to_markdown(table: pd.DataFrame, dataset: str, metrics: tuple[str, ...] = REPORT_METRICS) -> str:
    names = {"recall_at_5": "R@5", "recall_at_10": "R@10", "ndcg_at_5": "N@5", "ndcg_at_10": "N@10"}
    head = "| model | seeds | " + " | ".join(names.get(m, m) for m in metrics) + " |"
    lines = [
        f"# Test metrics on {dataset}",
        "",
        "mean ± std over seeds (latest run per seed, of the configuration of the model's latest run)",
        "",
        head,
        "|---|---|" + "---|" * len(metrics),
    ]
    for _, row in table.iterrows():
        cells = []
        for m in metrics:
            mean, std = row[f"{m}_mean"], row[f"{m}_std"]
            cells.append(f"{mean:.4f}" + ("" if np.isnan(std) else f" ± {std:.4f}"))
        lines.append(f"| {row['model']} | {row['seeds']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def bar_chart(table: pd.DataFrame, path: Path, dataset: str, metrics: tuple[str, ...] = REPORT_METRICS) -> None:
    from s2gr_core.plots import pyplot, save_figure

    fig, ax = pyplot().subplots(figsize=(1.6 + 1.4 * len(metrics), 3.6), dpi=120)
    width = 0.8 / max(len(table), 1)
    x = np.arange(len(metrics))
    for i, (_, row) in enumerate(table.iterrows()):
        means = [row[f"{m}_mean"] for m in metrics]
        stds = [0.0 if np.isnan(row[f"{m}_std"]) else row[f"{m}_std"] for m in metrics]
        ax.bar(x + i * width, means, width, yerr=stds, capsize=3, label=f"{row['model']} (n={row['seeds']})")
    ax.set_xticks(x + width * (len(table) - 1) / 2, [m.replace("_at_", "@") for m in metrics])
    ax.set_ylabel("test score")
    ax.set_title(f"Test metrics on {dataset}")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    save_figure(fig, path)


def write_report(
    records: list[dict[str, Any]], dataset: str, table: Path, csv: Path, chart: Path
) -> tuple[pd.DataFrame, str]:
    """Summarise ``records`` (latest per model and seed) into Markdown, CSV and a PNG chart."""
    from s2gr_core.io import write_text

    summary = summary_table(latest_per_seed(records))
    if summary.empty:
        raise ValueError(f"no evaluated model to report on for {dataset}")
    markdown = to_markdown(summary, dataset)
    write_text(markdown, table)
    write_text(summary.assign(dataset=dataset).to_csv(index=False, float_format="%.6f"), csv)
    bar_chart(summary, chart, dataset)
    return summary, markdown
