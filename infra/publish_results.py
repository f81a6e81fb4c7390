"""Publish a run's model table as a results file the README quotes, and rewrite the README's copy of it.

The front page's numbers must come from a file, not from a hand-edited table: this script reads the
table ``make run`` wrote (``reports/models.csv``), stores it with where it came from (command, commit,
date, machine, wall time) in ``docs/results/<name>.json``, and replaces the README block between
``<!-- results:<name> -->`` and ``<!-- /results -->`` with a table rendered from that file.
``tests/test_docs.py`` renders the block again from the file and fails if the two differ.

    python infra/publish_results.py --wall 12m55s --command "S2GR_DATA_DIR=../shared/data make run"
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import re
import sys
from pathlib import Path

from s2gr.tracking import git_info
from s2gr_core.cores import available_cores
from s2gr_core.io import write_json, write_text

ROOT = Path(__file__).resolve().parents[1]
METRICS = [("R@5", "recall_at_5"), ("R@10", "recall_at_10"), ("N@5", "ndcg_at_5"), ("N@10", "ndcg_at_10")]
BLOCK = re.compile(r"(<!-- results:(?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /results -->)", re.S)


def read_models_csv(path: Path) -> list[dict[str, object]]:
    """Rows of ``s2gr report``'s models.csv: model, seeds, config and each metric's mean and std."""
    if not path.is_file():
        raise SystemExit(f"{path}: no such file; run `make run` (or `s2gr report`) first")
    rows = []
    with path.open(newline="") as fh:
        for i, rec in enumerate(csv.DictReader(fh), start=2):
            try:
                row: dict[str, object] = {"model": rec["model"], "seeds": int(rec["seeds"]), "config": rec["config"]}
                row["dataset"] = rec.get("dataset") or ""
                for _, key in METRICS:
                    row[key] = float(rec[f"{key}_mean"])
                    std = rec.get(f"{key}_std") or ""
                    row[f"{key}_std"] = float(std) if std else None
            except (KeyError, ValueError) as exc:
                raise SystemExit(f"{path}: line {i}: {type(exc).__name__}: {exc}") from None
            rows.append(row)
    if not rows:
        raise SystemExit(f"{path}: the table is empty")
    return rows


def cell(mean: float, std: float | None) -> str:
    return f"{mean:.4f}" if std is None else f"{mean:.4f} ± {std:.4f}"


def render(record: dict[str, object]) -> str:
    """The README block for a results record: the model table and one line saying where it came from."""
    head = "| model | seeds | " + " | ".join(label for label, _ in METRICS) + " |"
    lines = [head, "|---" * (2 + len(METRICS)) + "|"]
    for row in record["rows"]:  # type: ignore[union-attr]
        cells = [cell(row[key], row[f"{key}_std"]) for _, key in METRICS]
        lines.append(f"| {row['model']} | {row['seeds']} | " + " | ".join(cells) + " |")
    src = record["source"]
    assert isinstance(src, dict)
    lines += [
        "",
        f"(`{src['command']}` at {src['commit']}, {src['date']}, {src['machine']}"
        + (f", {src['wall']} wall" if src.get("wall") else "")
        + ": "
        f"[docs/results/{record['name']}.json](docs/results/{record['name']}.json).)",
    ]
    return "\n".join(lines) + "\n"


def replace_block(text: str, name: str, body: str, where: str = "README.md") -> str:
    hits = [m for m in BLOCK.finditer(text) if m.group("name") == name]
    if len(hits) != 1:
        raise SystemExit(f"{where}: expected one <!-- results:{name} --> … <!-- /results --> block, found {len(hits)}")
    m = hits[0]
    return text[: m.start("body")] + body + text[m.end("body") :]


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{available_cores()}-core {model}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", type=Path, default=ROOT / "reports/models.csv", help="the run's models.csv")
    ap.add_argument("--name", help="results name (default make-run-<dataset>)")
    ap.add_argument("--command", default="make run", help="the command that produced the table")
    ap.add_argument("--commit", default=None, help="the commit it ran at (default: HEAD)")
    ap.add_argument("--date", default=None, help="the day it ran, YYYY-MM-DD (default: today)")
    ap.add_argument("--machine", default=None, help="the machine it ran on (default: this one, from /proc/cpuinfo)")
    ap.add_argument("--wall", default=None, help="wall time of the command, e.g. 12m55s")
    ap.add_argument("--readme", type=Path, default=ROOT / "README.md")
    args = ap.parse_args(argv)
    rows = read_models_csv(args.table)
    datasets = {str(r.pop("dataset", "")) for r in rows} - {""}
    dataset = next(iter(datasets)) if len(datasets) == 1 else "unknown"
    name = args.name or f"make-run-{dataset}"
    record = {
        "name": name,
        "dataset": dataset,
        "source": {
            "command": args.command,
            "commit": args.commit or git_info(ROOT)["git_commit"][:7],
            "date": args.date or dt.date.today().isoformat(),
            "machine": args.machine or machine(),
            "wall": args.wall,
            "table": str(args.table.relative_to(ROOT) if args.table.is_relative_to(ROOT) else args.table),
        },
        "rows": rows,
    }
    out = ROOT / "docs/results" / f"{name}.json"
    text = replace_block(args.readme.read_text(), name, render(record), where=str(args.readme))  # checked first
    write_json(record, out)
    write_text(text, args.readme)
    print(f"wrote {out.relative_to(ROOT)} and the README block results:{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
