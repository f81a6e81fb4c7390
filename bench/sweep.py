"""A validation-only parameter sweep as DVC experiments: queue, run one at a time, tabulate.

    python bench/sweep.py bench/sweeps/s2gr-ml-100k.yaml                 # queue every variant, run, table
    python bench/sweep.py bench/sweeps/s2gr-ml-100k.yaml --only base sum  # a subset
    python bench/sweep.py bench/sweeps/s2gr-ml-100k.yaml --table-only     # tabulate what has run

Each variant becomes ``dvc exp run --queue -n <sweep>-<variant> -S ++key=value … <stage>``, with the
sweep's ``common`` overrides first; the queue runs ``jobs`` workers (give each job its share of the
cores through ``common``, e.g. ``s2gr.threads: 1`` with 2 jobs on 2 cores). Only the
sweep's stage and what it needs re-run, so the test split is never evaluated for the choice. The
stage logs every epoch to MLflow as usual (the queue's copies log to the project's store). The table
(``bench/results/sweep-<sweep>.{json,md}``) is read back from ``dvc exp show --json``, best
validation SID NLL first; ``dvc exp show`` shows the same experiments.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
DVC = [sys.executable, "-m", "dvc"]
# the queue's workers start `dvc` and the stage commands (`s2gr`) by name: the venv's bin first, made
# absolute (a python found through a relative PATH entry has a relative sys.executable, and the workers
# run in other folders)
os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).absolute().parent), os.environ.get("PATH", "")])
COLUMNS = (
    "best_valid_sid_nll",
    "best_valid_ce_s1",
    "best_valid_ce_s2",
    "best_valid_ce_s3",
    "best_valid_ndcg_at_10",
    "best_valid_cluster_acc_l1",
    "best_valid_cluster_acc_l2",
    "best_valid_cluster_acc_l3",
)


def set_value(value: Any) -> str:
    """A YAML value as ``dvc exp run -S`` parses it: ``true``, ``0.1``, ``[1.0, 0.5]``."""
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def queue_commands(sweep: str, spec: dict, only: list[str] | None) -> list[list[str]]:
    """One ``dvc exp run --queue`` command per variant (in the file's order)."""
    unknown = sorted(set(only or ()) - set(spec["variants"]))
    if unknown:
        raise SystemExit(f"--only: no variant(s) {unknown} in the sweep; it has {sorted(spec['variants'])}")
    commands = []
    for name, overrides in spec["variants"].items():
        if only and name not in only:
            continue
        merged = {**(spec.get("common") or {}), **(overrides or {})}
        # `++` sets a key or adds it: a model section may override a gr: key it does not hold yet
        sets = [arg for key, value in merged.items() for arg in ("-S", f"++{key}={set_value(value)}")]
        commands.append([*DVC, "exp", "run", "--queue", "-n", f"{sweep}-{name}", *sets, spec["stage"]])
    return commands


def experiments(shown: list[dict]) -> dict[str, tuple[str, dict]]:
    """{experiment name: (state, its data)} from ``dvc exp show --json``: one entry per experiment of
    each baseline revision; a queued or running one carries its baseline's metrics, so its state says
    whether the metrics are its own ('success')."""
    found: dict[str, tuple[str, dict]] = {}
    for baseline in shown:
        for exp in baseline.get("experiments") or []:
            state = (exp.get("executor") or {}).get("state") or "success"  # no executor: a finished, saved run
            found[exp["name"]] = (state, exp["revs"][0].get("data") or {})
    return found


def table(sweep: str, spec: dict) -> list[dict]:
    # every commit's experiments: the sweep's baseline need not be HEAD any more
    command = [*DVC, "exp", "show", "--json", "--all-commits"]
    shown = subprocess.run(command, cwd=ROOT, check=True, capture_output=True).stdout
    shown = json.loads(shown)
    rows = []
    for name, (state, data) in experiments(shown).items():
        if not name.startswith(f"{sweep}-"):
            continue
        metrics = (data.get("metrics") or {}).get(spec["metrics"], {}).get("data", {}) if state == "success" else {}
        variant = name.removeprefix(f"{sweep}-")
        rows.append({"variant": variant, "state": state, **{c: metrics.get(c) for c in COLUMNS}})
    return sorted(rows, key=lambda r: (r["best_valid_sid_nll"] is None, r["best_valid_sid_nll"] or 0.0))


def markdown(rows: list[dict], spec: dict) -> str:
    head = "| variant | overrides | state | " + " | ".join(c.removeprefix("best_valid_") for c in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 3)]
    for r in rows:
        over = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in (spec["variants"].get(r["variant"]) or {}).items())
        cells = ["—" if r[c] is None else f"{r[c]:.4f}" for c in COLUMNS]
        lines.append(f"| {r['variant']} | {over or '(params.yaml)'} | {r['state']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def wait_for_queue(poll: float = 20.0) -> None:
    while True:
        status = subprocess.run([*DVC, "queue", "status"], cwd=ROOT, capture_output=True, text=True).stdout
        if not any(word in status for word in ("Queued", "Running")):
            return
        time.sleep(poll)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", type=Path, help="sweep file (bench/sweeps/*.yaml)")
    parser.add_argument("--only", nargs="+", help="run only these variants")
    parser.add_argument("--table-only", action="store_true", help="tabulate the sweep's finished experiments")
    args = parser.parse_args(argv)
    spec = yaml.safe_load(args.sweep.read_text())
    sweep = args.sweep.stem
    if not args.table_only:
        for command in queue_commands(sweep, spec, args.only):
            subprocess.run(command, cwd=ROOT, check=True)
        subprocess.run([*DVC, "queue", "start", "-j", str(spec.get("jobs", 1))], cwd=ROOT, check=True)
        wait_for_queue()
    rows = table(sweep, spec)
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"sweep-{sweep}.json").write_text(json.dumps(rows, indent=2))
    (out / f"sweep-{sweep}.md").write_text(markdown(rows, spec))
    print(markdown(rows, spec))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
