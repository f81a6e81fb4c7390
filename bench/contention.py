"""How training degrades when the CPU is shared: OpenMP's default spin-waiting vs the project's policy.

    python bench/contention.py amazon-beauty --steps 8
    python bench/contention.py ml-100k --steps 40 --batch-size 256 --policies default PASSIVE SPIN=1000 SPIN=3000

Each scenario starts fresh processes that time ``--steps`` TIGER training steps (the
pipeline's ``GRTrainer.step``, batch ``--batch-size``, the full history window, no cropping so every step
costs the same; the model of bench/configs/gr-<dataset>.yaml, paper size for amazon-beauty) on the
SIDs bench/gr.py builds:

- ``alone``: one training process;
- ``busy neighbour``: one training process next to a pure-Python busy loop (a browser, an IDE);
- ``two trainings``: two training processes at once (two runs, or a run and a test suite).

``default`` is OpenMP's own wait policy (threads spin on a barrier up to 300,000 times before they
sleep), ``PASSIVE`` sleeps at once, ``SPIN=N`` spins N times (``GOMP_SPINCOUNT``); ``SPIN=3000`` is
what importing ``s2gr_core`` sets unless ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` is already set. A worker sets its
policy before torch loads OpenMP, which reads it once at load. Writes
bench/results/contention-<dataset>.{json,md} and one MLflow run in "s2gr-bench".
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# s2gr_core imports no torch: a worker still sets its OpenMP policy before torch loads
from s2gr_core import SPIN_COUNT

SCENARIOS = ("alone", "busy neighbour", "two trainings")


def worker(args: argparse.Namespace) -> None:
    """Time training steps in this process; print ``RESULT {json}``."""
    os.environ.pop("OMP_WAIT_POLICY", None)
    os.environ.pop("GOMP_SPINCOUNT", None)
    if args.worker.startswith("SPIN="):  # GNU OpenMP: spin this many times before sleeping
        os.environ["GOMP_SPINCOUNT"] = args.worker.removeprefix("SPIN=")
    elif args.worker != "default":
        os.environ["OMP_WAIT_POLICY"] = args.worker
    from dataclasses import replace

    import numpy as np
    import torch  # noqa: F401  (OpenMP reads the policy now; s2gr_core then leaves it as it is)
    import yaml
    from common import ROOT, prepare

    from s2gr_core.models.gr.train import GRTrainer
    from s2gr_core.models.runtime import runtime_for
    from s2gr_core.split import load_train
    from s2gr_core.stages.generative import load_semantic

    config = yaml.safe_load((ROOT / "bench" / "configs" / f"gr-{args.dataset}.yaml").read_text())
    work, params = prepare(args.dataset)
    n_items = int(json.loads((work / "metrics" / "data.json").read_text())["items"])
    sem = load_semantic(work / "data" / "sids", n_items)
    users, sequences = load_train(str(work / "data" / "split" / "train.parquet"))
    model = {**config["model"], "batch_size": args.batch_size, "threads": args.threads, "length_buckets": False}
    cfg = replace(params.tiger, **{**model, "device": "cpu"})
    runtime = runtime_for("cpu", args.threads, "fp32", False)
    trainer = GRTrainer(cfg, "tiger", sem, users, sequences, params.split.max_history, runtime)
    batches = trainer.batches(np.random.default_rng(0))
    for idx in batches[:2]:  # warm-up
        trainer.step(idx)
    started = time.perf_counter()
    for idx in batches[2 : 2 + args.steps]:
        trainer.step(idx)
    ms = (time.perf_counter() - started) / args.steps * 1000
    print("RESULT " + json.dumps({"ms_per_step": ms, "policy": args.worker, "threads": args.threads}), flush=True)


def run_scenario(args: argparse.Namespace, policy: str, scenario: str, threads: int) -> list[float]:
    """ms/step of each training process of one scenario."""
    from common import ROOT, run_parallel, worker_run

    command = [sys.executable, __file__, args.dataset, "--worker", policy, "--threads", str(threads)]
    command += ["--steps", str(args.steps), "--batch-size", str(args.batch_size)]
    work = ROOT / "bench" / "work" / args.dataset / "contention"
    trainings = 2 if scenario == "two trainings" else 1
    name = f"{policy}-{scenario.replace(' ', '-')}-{threads}t"
    runs = [worker_run(work, f"{name}-{i}", command, [], "none") for i in range(trainings)]
    busy = None
    if scenario == "busy neighbour":
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        results, _ = run_parallel(runs, jobs=trainings)
    finally:
        if busy is not None:
            busy.kill()
    missing = [n for n, r in results.items() if r is None]
    if missing:
        raise SystemExit(f"contention workers failed: {missing} (see their worker.log under {work})")
    return [r["ms_per_step"] for r in results.values() if r is not None]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset")
    parser.add_argument("--steps", type=int, default=8, help="timed training steps per process")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads per process")
    parser.add_argument(
        "--policies",
        nargs="+",
        default=["default", "PASSIVE", f"SPIN={SPIN_COUNT}"],
        help="OMP_WAIT_POLICY values (default: OpenMP's own), or SPIN=N for GOMP_SPINCOUNT=N",
    )
    parser.add_argument("--no-mlflow", action="store_true", help="write the result files only")
    parser.add_argument(
        "--from-results", action="store_true", help="re-write the table and log the last results without measuring"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return 0

    from common import RESULTS, device_label, log_run

    stem = RESULTS / f"contention-{args.dataset}"
    if args.from_results:
        report = json.loads(stem.with_suffix(".json").read_text())
    else:
        report = {"dataset": args.dataset, "device": device_label("cpu"), "steps": args.steps}
        report |= {"batch_size": args.batch_size, "rows": measure(args)}
    table = markdown(report)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2))
    stem.with_suffix(".md").write_text(table)
    print(table)
    if not args.no_mlflow:
        metrics = {  # MLflow names allow no "=": SPIN=3000 is logged as SPIN_3000
            f"{r['policy'].replace('=', '_')}.{r['scenario'].replace(' ', '_')}.{r['threads']}t.ms_per_step": max(
                r["ms_per_step"]
            )
            for r in report["rows"]
        }
        run_id = log_run(
            f"contention-{args.dataset}",
            {"bench": "contention", "device": report["device"]},
            metrics,
            {"steps": report["steps"], "batch_size": report["batch_size"]},
            [stem.with_suffix(".json"), stem.with_suffix(".md")],
        )
        print(f"MLflow run {run_id} (experiment s2gr-bench)")
    return 0


def measure(args: argparse.Namespace) -> list[dict]:
    import yaml
    from common import ROOT
    from gr import build_sids

    build_sids(yaml.safe_load((ROOT / "bench" / "configs" / f"gr-{args.dataset}.yaml").read_text()))
    rows = []
    cases = [(p, s, args.threads) for p in args.policies for s in SCENARIOS]
    for policy, scenario, threads in [*cases, (f"SPIN={SPIN_COUNT}", "two trainings", 1)]:
        ms = run_scenario(args, policy, scenario, threads)
        rows.append({"policy": policy, "scenario": scenario, "threads": threads, "ms_per_step": ms})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def markdown(report: dict) -> str:
    """The table: ms/step of each process, against the same policy alone and the fastest alone."""
    rows = report["rows"]
    alone = {r["policy"]: r["ms_per_step"][0] for r in rows if r["scenario"] == "alone"}
    fastest = min(alone.values(), default=None)
    lines = [
        f"# Training under CPU contention on {report['dataset']}: {report['device']}",
        "",
        f"TIGER training step of bench/configs/gr-{report['dataset']}.yaml, batch {report['batch_size']}, full "
        f"window (no cropping), {report['steps']} timed steps per process.",
        "",
        "| wait policy | scenario | threads per process | ms/step (each process) | x same policy alone "
        "| x fastest alone |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        ms, base = r["ms_per_step"], alone.get(r["policy"])
        own = " / ".join(f"{m / base:.1f}" for m in ms) if base else "-"
        best = " / ".join(f"{m / fastest:.1f}" for m in ms) if fastest else "-"
        each = " / ".join(f"{m:.0f}" for m in ms)
        lines.append(f"| {r['policy']} | {r['scenario']} | {r['threads']} | {each} | {own} | {best} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
