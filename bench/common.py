"""What every benchmark script shares: the bench work folder, runs in parallel under a time budget
(each a task of the Prefect flow in bench/grid.py), and logging to MLflow ("s2gr-bench")."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STOPPED = "STOPPED by the time budget"  # run_worker's line in a worker log
sys.path.insert(0, str(ROOT))

from s2gr import env  # noqa: E402

env.configure(ROOT)

from s2gr_core.config import Params, load_params  # noqa: E402
from s2gr_core.cores import available_cores  # noqa: E402
from s2gr_core.stages import CHECKPOINTS  # noqa: E402

RESULTS = ROOT / "bench" / "results"
REPORTED = ("recall_at_5", "recall_at_10", "ndcg_at_5", "ndcg_at_10")  # test metrics in every table


def load_config(path: Path, overrides: Sequence[str], section: str) -> dict:
    """A frozen config, with ``key=value`` overrides of its ``section`` (values parsed as YAML)."""
    import yaml

    config = yaml.safe_load(path.read_text())
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or key not in config[section]:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE with KEY one of {sorted(config[section])}")
        config[section][key] = yaml.safe_load(value)
    return config


def stat(values: Sequence[float]) -> dict[str, float]:
    """Mean and sample std (0 for a single value) of one metric over seeds."""
    import numpy as np

    arr = np.asarray(values, dtype=float)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0}


def prepare(dataset: str) -> tuple[Path, Params]:
    """The split of ``dataset`` made by the pipeline's own data stages, in bench/work/<dataset>/."""
    from s2gr_core.stages import get_stage

    params = load_params(ROOT / "params.yaml")
    params = replace(params, data=replace(params.data, name=dataset))
    work = ROOT / "bench" / "work" / dataset
    if not (work / "data" / "split" / "test.parquet").is_file():
        for name in ("fetch", "ingest", "validate", "split"):
            get_stage(name).run(params, work)
    return work, params


def override(params: Params, sections: dict[str, dict]) -> Params:
    """``params`` with some fields of some sections replaced: {section: {field: value}}."""
    return replace(params, **{name: replace(getattr(params, name), **values) for name, values in sections.items()})


def log_run(
    name: str,
    tags: dict[str, str],
    metrics: dict[str, float],
    params: dict[str, Any],
    artifacts: Sequence[Path] = (),
) -> str:
    """One finished MLflow run in the experiment ``s2gr-bench`` (same store as the pipeline)."""
    from mlflow.entities import Metric, Param

    from s2gr.tracking import client, experiment_id, git_info

    mlf = client(ROOT)
    run = mlf.create_run(experiment_id(mlf, "s2gr-bench", ROOT), run_name=name, tags={**git_info(ROOT), **tags})
    now = int(time.time() * 1000)
    mlf.log_batch(
        run.info.run_id,
        metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
        params=[Param(k, str(v)) for k, v in params.items()],
    )
    for path in artifacts:
        mlf.log_artifact(run.info.run_id, str(path))
    mlf.set_terminated(run.info.run_id)
    return run.info.run_id


def run_folder(work: Path, name: str) -> Path:
    """``work/runs/<name>``: a project folder of its own for one run (models, predictions, metrics),
    whose ``data`` is a link to the shared ``work/data``, so runs can train side by side."""
    folder = work / "runs" / name
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / "data"
    if not link.is_symlink():
        link.symlink_to(Path("..") / ".." / "data", target_is_directory=True)
    return folder


def device_label(device: str) -> str:
    """``cuda (NVIDIA H100 80GB HBM3)`` or ``cpu (2 cores)``: which machine produced a number."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return f"{device} ({os.cpu_count()} cores)"


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """The options every multi-run benchmark shares: parallel runs, a time budget, MLflow or not."""
    parser.add_argument(
        "--jobs", type=int, default=1, help="runs at a time, each in its own process and folder (a GPU holds many)"
    )
    parser.add_argument(
        "--deadline",
        type=float,
        metavar="MINUTES",
        help="stop runs still training after MINUTES; each finishes from its best checkpoint (marked in the table)",
    )
    parser.add_argument(
        "--deployment",
        metavar="FLOW/NAME",
        help="run each run as a flow run of this deployment on its work pool's workers, e.g. "
        "s2gr-bench-run/bench-run (prefect.yaml; needs PREFECT_API_URL and workers that see this folder); "
        "the pool's concurrency limit decides how many run at once; --jobs still gives each run its share of "
        "the cores (set it to the runs per worker machine)",
    )
    parser.add_argument(
        "--no-mlflow", action="store_true", help="write the result files only (a machine without MLflow)"
    )
    parser.add_argument(
        "--from-results",
        type=Path,
        metavar="JSON",
        help="run nothing: rewrite the tables of an earlier result file (e.g. from a GPU machine) and log it to MLflow",
    )


def worker_overrides(args: argparse.Namespace, section: dict) -> list[str]:
    """The ``--set`` values every worker gets: the user's, plus its share of the cores when runs go in
    parallel and the config leaves ``threads`` at 0 (all cores for each would oversubscribe them)."""
    overrides = list(args.overrides)
    if args.jobs > 1 and not section.get("threads"):
        overrides.append(f"threads={max(1, available_cores() // args.jobs)}")
    return overrides


@dataclass(slots=True)
class Run:
    """One benchmark run: its name, the worker command, its folder and where its last checkpoint goes."""

    name: str
    command: list[str]  # the worker's command line; "--set KEY=VALUE ..." must be its last option
    folder: Path
    checkpoint: Path  # last.pt of the run: holds the epoch reached when a run is stopped

    @property
    def log(self) -> Path:
        return self.folder / "worker.log"

    def to_params(self) -> dict:
        """The run as JSON-able flow-run parameters (a work pool's worker rebuilds it)."""
        return {
            "name": self.name,
            "command": self.command,
            "folder": str(self.folder),
            "checkpoint": str(self.checkpoint),
        }

    @classmethod
    def from_params(cls, params: dict) -> Run:
        return cls(params["name"], list(params["command"]), Path(params["folder"]), Path(params["checkpoint"]))


def worker_run(work: Path, name: str, command: list[str], overrides: list[str], model: str) -> Run:
    """The run ``name`` in its folder under ``work``; ``overrides`` go last, as ``--set`` values."""
    folder = run_folder(work, name)
    return Run(
        name, command + (["--set", *overrides] if overrides else []), folder, folder / CHECKPOINTS / model / "last.pt"
    )


def latest_start(log: Path) -> list[str]:
    """The lines the worker's latest start wrote (the log is appended to; a start opens with ``== ``)."""
    lines = log.read_text().splitlines() if log.is_file() else []
    starts = [i for i, line in enumerate(lines) if line.startswith("== ")]
    return lines[starts[-1] + 1 :] if starts else lines


def worker_result(log: Path) -> dict | None:
    """The ``RESULT {json}`` line of the worker's latest start, or None if that start did not finish."""
    found = [line for line in latest_start(log) if line.startswith("RESULT {")]  # not a traceback quoting the print
    return json.loads(found[-1].removeprefix("RESULT ")) if found else None


def worker_stopped(log: Path) -> bool:
    """Whether the time budget stopped the worker's latest start (:func:`run_worker` says so in the log)."""
    return STOPPED in latest_start(log)


def run_worker(run: Run, ends: float) -> tuple[dict | None, bool]:
    """One run's worker process, logging to its folder's worker.log (appended: a stopped run's
    finishing pass keeps its epoch lines), stopped at ``ends`` (epoch seconds); not started at all
    when ``ends`` has passed. Returns (its result or None, whether it was stopped)."""
    if time.time() >= ends:
        return None, False
    with run.log.open("a") as handle:
        handle.write(f"== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(run.command)}\n")
        handle.flush()
        proc = subprocess.Popen(run.command, stdout=handle, stderr=subprocess.STDOUT)
        print(f"started {run.name} (log {run.log})", flush=True)
        stopped = False
        while proc.poll() is None:
            if time.time() >= ends and not stopped:
                print(f"time budget spent: stopping {run.name}", flush=True)
                proc.terminate()
                stopped = True
                handle.write(f"{STOPPED}\n")  # for whoever reads the result from the log (a pool's grid)
                handle.flush()
            time.sleep(0.5)
    result = worker_result(run.log)
    if result is None and not stopped:
        print(f"{run.name} failed (exit {proc.returncode}); the end of {run.log}:", flush=True)
        print(run.log.read_text()[-3000:], flush=True)
    else:
        print(f"{'stopped' if stopped else 'finished'} {run.name}", flush=True)
    return result, stopped


def run_parallel(
    runs: Sequence[Run], jobs: int, deadline: float | None = None, deployment: str | None = None
) -> tuple[dict[str, dict | None], set[str]]:
    """Run the workers, ``jobs`` at a time, through the Prefect flow ``s2gr-bench-grid`` (bench/grid.py);
    with ``deployment``, as flow runs of it on its work pool's workers.

    At ``deadline`` (seconds from now) running workers are stopped and queued ones never start.
    Returns (name -> the worker's result, or None for a run that did not finish; the names stopped).
    """
    from grid import run_grid

    return run_grid(list(runs), jobs, deadline, deployment)


def last_epoch(checkpoint: Path) -> int:
    """The epoch a stopped run's ``last.pt`` holds (0 when it never finished an epoch)."""
    from s2gr_core.io import load_torch

    if not checkpoint.is_file():
        return 0
    return int(load_torch(checkpoint)["epoch"])


def run_all(
    runs: Sequence[Run], jobs: int, deadline_minutes: float | None, deployment: str | None = None
) -> list[dict]:
    """Every run, in parallel under the time budget (on ``deployment``'s work pool when given); a run
    stopped by the budget is finished from its checkpoints (resumed with ``max_epochs`` = the epochs it
    completed, so it trains no further and decodes with its best weights) and marked
    ``stopped_at_epoch``. Runs that never completed an epoch are left out, and said so."""
    results, names = run_parallel(runs, jobs, deadline_minutes * 60 if deadline_minutes else None, deployment)
    stopped = {run.name: last_epoch(run.checkpoint) for run in runs if run.name in names}
    resumable = [r for r in runs if stopped.get(r.name)]
    finishing = [
        replace(r, command=[*r.command, *([] if "--set" in r.command else ["--set"]), f"max_epochs={stopped[r.name]}"])
        for r in resumable
    ]
    if finishing:
        print(f"finishing {len(finishing)} stopped runs from their checkpoints", flush=True)
        for name, result in run_parallel(finishing, jobs, deployment=deployment)[0].items():
            if result is not None:
                results[name] = {**result, "stopped_at_epoch": stopped[name]}
    for name, result in results.items():
        if result is None:
            print(f"{name}: no result (failed, never started, or stopped before its first epoch)", flush=True)
    return [r for r in results.values() if r is not None]


def write_results(stem: str, report: dict, table: str) -> list[Path]:
    """``bench/results/<stem>.json`` (the report) and ``.md`` (the table, also printed); their paths."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    paths = [RESULTS / f"{stem}.json", RESULTS / f"{stem}.md"]
    paths[0].write_text(json.dumps(report, indent=2))
    paths[1].write_text(table)
    print(table)
    return paths


def finish(
    args: argparse.Namespace,
    name: str,
    results: list[dict],
    summarise: Callable[[list[dict]], dict],
    markdown: Callable[[list[dict], dict], str],
    log_to_mlflow: Callable[[list[dict]], None],
) -> None:
    """Write ``bench/results/<name>.{json,md}``, log to MLflow unless ``--no-mlflow``, print the table."""
    summary = summarise(results)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps({"summary": summary, "runs": results}, indent=2))
    table = markdown(results, summary)
    (RESULTS / f"{name}.md").write_text(table)
    if not args.no_mlflow:
        log_to_mlflow(results)
    print(table)


def earlier_results(path: Path) -> list[dict]:
    """The runs of an earlier result file (``--from-results``)."""
    if not path.is_file():
        raise SystemExit(f"--from-results {path}: no such file")
    return json.loads(path.read_text())["runs"]
