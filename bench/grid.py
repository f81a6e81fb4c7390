"""Benchmark grids on Prefect: the flow ``s2gr-bench-grid`` runs every run of a grid (a variant × seed,
a sweep point) under a time budget, in one of two places:

* here (the default): one task per run, each starting the run's worker process in its own folder
  (bench/common.py ``run_worker``), ``jobs`` tasks at a time (Prefect's thread-pool task runner);
* on a work pool's workers (``--deployment s2gr-bench-run/bench-run``, a Prefect server in
  ``PREFECT_API_URL``): one flow run of the deployment per run, which a worker of its pool picks up
  and runs as a process of its own (prefect.yaml declares the process pool ``s2gr-bench`` and
  Docker and Kubernetes pools for the same flow). How many run at once is the pool's business: its
  concurrency limit (``prefect work-pool set-concurrency-limit s2gr-bench N``) or each worker's
  ``--limit``. Runs read and write their folders, so every worker needs the project's filesystem.

Against a Prefect server (``PREFECT_API_URL``, e.g. ``infra/local-servers.sh`` or ``infra/team.sh``)
every grid is a flow run and every benchmark run a task run (or a flow run of its own on a pool)
named after it, with its state, duration and log lines in the UI; without one, Prefect's ephemeral
server records them for the process. ``python bench/gr.py ml-100k --jobs 2 --deadline 30`` is such a grid.
"""

from __future__ import annotations

import math
import time

from common import Run, run_worker, worker_result, worker_stopped
from prefect import flow, task, unmapped
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

# every call starts its worker afresh: a run is never answered from a cache
bench_run = task(run_worker, name="bench-run", task_run_name="{run.name}", cache_policy=NO_CACHE)


@flow(name="s2gr-bench-run", validate_parameters=False, log_prints=True)
def bench_run_flow(run: dict, ends: float | None) -> None:
    """One run of a grid as a flow of its own, for a work pool's worker (deployment ``bench-run``):
    ``run`` is :meth:`Run.to_params`, ``ends`` the grid's time budget in epoch seconds (None: none)."""
    run_worker(Run.from_params(run), float("inf") if ends is None else ends)


@task(name="bench-run-on-pool", task_run_name="{run.name}", cache_policy=NO_CACHE)
def bench_run_on_pool(run: Run, ends: float, deployment: str) -> tuple[dict | None, bool]:
    """Queues a flow run of ``deployment`` for ``run`` and waits for it; the result and whether the
    budget stopped it come from the run's log, as for a run started here."""
    from prefect.deployments import run_deployment

    budget = ends if math.isfinite(ends) else None  # JSON has no infinity
    flow_run = run_deployment(
        deployment, parameters={"run": run.to_params(), "ends": budget}, flow_run_name=run.name, timeout=None
    )
    print(f"{run.name}: flow run {flow_run.name} ended {flow_run.state.name if flow_run.state else 'unknown'}")
    return worker_result(run.log), worker_stopped(run.log)


@flow(name="s2gr-bench-grid", validate_parameters=False, log_prints=True)
def grid(
    runs: list[Run], deadline: float | None = None, deployment: str | None = None
) -> tuple[dict[str, dict | None], set[str]]:
    """Every run, as many at a time as the task runner (or the deployment's work pool) allows; at
    ``deadline`` (seconds from the start) running workers are stopped and queued ones never start.
    Returns (name -> the worker's result, or None for a run that did not finish or never started;
    the names stopped)."""
    ends = time.time() + deadline if deadline else float("inf")
    if deployment:
        futures = bench_run_on_pool.map(runs, unmapped(ends), unmapped(deployment))
    else:
        futures = bench_run.map(runs, unmapped(ends))
    outcomes = [future.result() for future in futures]
    results = {run.name: result for run, (result, _) in zip(runs, outcomes, strict=True)}
    return results, {run.name for run, (_, stopped) in zip(runs, outcomes, strict=True) if stopped}


def run_grid(
    runs: list[Run], jobs: int, deadline: float | None = None, deployment: str | None = None
) -> tuple[dict[str, dict | None], set[str]]:
    """:func:`grid` with ``jobs`` runs at a time here, or every run queued at once on ``deployment``'s pool."""
    threads = len(runs) if deployment else jobs
    return grid.with_options(task_runner=ThreadPoolTaskRunner(max_workers=max(1, threads)))(runs, deadline, deployment)
