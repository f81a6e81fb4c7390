"""Benchmark grids on Prefect: the flow ``s2gr-bench-grid`` runs every run of a grid (a variant × seed,
a sweep point) as one task that starts the run's worker process in its own folder (bench/common.py
``run_worker``), ``jobs`` tasks at a time (Prefect's thread-pool task runner), under a time budget.

Against a Prefect server (``PREFECT_API_URL``, e.g. ``infra/local-servers.sh`` or ``infra/team.sh``)
every grid is a flow run and every benchmark run a task run named after it, with its state, duration
and log lines in the UI; without one, Prefect's ephemeral server records them for the process.
``python bench/gr.py ml-100k --jobs 2 --deadline 30`` is such a grid.
"""

from __future__ import annotations

import time

from common import Run, run_worker
from prefect import flow, task, unmapped
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

# every call starts its worker afresh: a run is never answered from a cache
bench_run = task(run_worker, name="bench-run", task_run_name="{run.name}", cache_policy=NO_CACHE)


@flow(name="s2gr-bench-grid", validate_parameters=False, log_prints=True)
def grid(runs: list[Run], deadline: float | None = None) -> tuple[dict[str, dict | None], set[str]]:
    """Every run, as many at a time as the task runner allows; at ``deadline`` (seconds from the
    start) running workers are stopped and queued ones never start. Returns (name -> the worker's
    result, or None for a run that did not finish or never started; the names stopped)."""
    ends = time.time() + deadline if deadline else float("inf")
    outcomes = [future.result() for future in bench_run.map(runs, unmapped(ends))]
    results = {run.name: result for run, (result, _) in zip(runs, outcomes, strict=True)}
    return results, {run.name for run, (_, stopped) in zip(runs, outcomes, strict=True) if stopped}


def run_grid(runs: list[Run], jobs: int, deadline: float | None = None) -> tuple[dict[str, dict | None], set[str]]:
    """:func:`grid` with ``jobs`` runs at a time."""
    return grid.with_options(task_runner=ThreadPoolTaskRunner(max_workers=jobs))(runs, deadline)
