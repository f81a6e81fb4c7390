"""The ``s2gr-pipeline`` Prefect flow: every DVC stage, in DAG order, one task each.

Run it without any server (Prefect starts an ephemeral one)::

    python -m flows.pipeline                  # what `make flow` does
    python -m flows.pipeline --refresh-data   # re-read the data source first (a new data drop)
    python -m flows.pipeline --until sids     # only `sids` and the stages it depends on
    python -m flows.pipeline --jobs 2         # up to 2 independent stages at a time, half the cores each

or against a Prefect server by setting ``PREFECT_API_URL``. Deployments (weekly
retraining) are declared in ``prefect.yaml``. The flow opens the MLflow parent run;
each stage's own process logs its nested run under it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

from s2gr import env

env.configure(env.find_root() if __name__ == "__main__" else None)

import networkx as nx  # noqa: E402
from prefect import flow, get_run_logger  # noqa: E402
from prefect.artifacts import create_markdown_artifact  # noqa: E402
from prefect.futures import PrefectFuture, as_completed  # noqa: E402
from prefect.runtime import flow_run  # noqa: E402
from prefect.task_runners import ThreadPoolTaskRunner  # noqa: E402

from s2gr_core.cores import available_cores  # noqa: E402
from tasks.dvc import core_limit, run_dvc_stage, stage_dag  # noqa: E402

FETCH_STAGE = "fetch"
VALIDATE_STAGE = "validate"  # its inputs are the data version a pipeline run used
PROMOTION = "reports/promotion.md"
MODEL_TABLE = "reports/models.md"


# run_stages submits at most `jobs` stage tasks at a time, and the core limit (not the thread count)
# bounds them with other flow runs on the machine: a thread each never oversubscribes anything.
@flow(name="s2gr-pipeline", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=64))
def s2gr_pipeline(
    refresh_data: bool = False, force: bool = False, until: str | None = None, jobs: int | None = None
) -> list[dict]:
    """Reproduce the DVC pipeline; DVC decides which stages are stale.

    Args:
        refresh_data: force the ``fetch`` stage, so a new data drop in the data
            directory is picked up; downstream stages re-run only if the raw
            files actually changed.
        force: re-run every stage even if DVC considers it up to date.
        until: run only this stage and the stages it depends on (all stages when empty).
        jobs: how many stages may run at the same time where none needs another's outputs, each
            with 1/jobs of the cores (``orchestration.jobs`` in params.yaml when empty).
    """
    from s2gr.tracking import end_run, start_pipeline_run
    from s2gr_core.config import load_params
    from s2gr_core.stages import get_stage

    root = env.find_root()
    env.configure(root)
    logger = get_run_logger()
    params = load_params(root / "params.yaml")
    jobs = jobs or params.orchestration.jobs
    if jobs < 1:
        raise ValueError(f"jobs: must be >= 1, got {jobs}")
    dag = stage_dag(root, until or None)
    cores = available_cores()
    share = max(1, cores // jobs)
    retrying = run_dvc_stage.with_options(
        retries=params.orchestration.retries, retry_delay_seconds=params.orchestration.retry_delay_seconds
    )
    parent = start_pipeline_run(
        root, params.tracking.experiment, params.data.name, trigger=f"prefect flow run {flow_run.name}"
    )
    logger.info("MLflow parent run %s; stages in order: %s", parent, ", ".join(dag))
    outcome: dict[str, dict] = {}
    try:
        limit, slots = core_limit(cores)
        share = min(share, slots)
        logger.info("up to %d stage(s) at a time, %d core(s) each (limit %s: %d)", jobs, share, limit, slots)
        start = partial(
            retrying.submit,
            root=str(root),
            parent_run_id=parent,
            cores=share if jobs > 1 else None,  # alone, a stage runs as under `dvc repro`
            limit=limit,
            occupy=share,
        )
        futures = run_stages(
            dag, jobs, lambda stage: start(stage, force=force or (refresh_data and stage == FETCH_STAGE))
        )
        for stage, future in futures.items():
            if future is not None and future.state.is_completed():
                outcome[stage] = future.result()
            else:  # Failed or Crashed; None when a stage it needs did not complete
                outcome[stage] = {"stage": stage, "status": "not run" if future is None else "FAILED", "seconds": ""}
    finally:
        ok = len(outcome) == len(dag) and all(r["status"] in ("ran", "skipped") for r in outcome.values())
        # a run that stops before validate has no data version of its own to name
        validated = None
        if VALIDATE_STAGE in dag:
            validated = {role: root / path for role, path in get_stage(VALIDATE_STAGE).deps.items()}
        end_run(root, parent, ok, inputs=validated)
        create_markdown_artifact(
            key="s2gr-pipeline-summary",
            markdown=summary(params.data.name, parent, jobs, outcome, root if ok else None),
            description="Which DVC stages ran, were skipped or failed, every model's test metrics, which model serves",
        )
    ran = [stage for stage, r in outcome.items() if r["status"] == "ran"]
    logger.info("stages run: %s", ", ".join(ran) or "none (everything up to date)")
    if not ok:
        failed = [stage for stage, r in outcome.items() if r["status"] == "FAILED"]
        not_run = [stage for stage, r in outcome.items() if r["status"] == "not run"]
        raise RuntimeError(f"stage(s) failed: {', '.join(failed)}; not run: {', '.join(not_run) or 'none'}")
    return list(outcome.values())


def run_stages(
    dag: dict[str, list[str]], jobs: int, start: Callable[[str], PrefectFuture]
) -> dict[str, PrefectFuture | None]:
    """Starts each stage of ``dag`` (in topological order, each with the stages it needs) once all
    of those completed, at most ``jobs`` at a time, and waits for them all. Among the stages ready at
    once, the one with the most stages after it starts first (the longer chain), then dvc.yaml's order.
    A stage is never started when a stage it needs failed or never ran. Returns each stage's finished
    future, None for those never started, in ``dag``'s order."""
    graph = dag_graph(dag)
    after = {stage: len(nx.descendants(graph, stage)) for stage in dag}  # dependents, direct or not
    # a stage has more dependents than any of its own: this order is also topological
    pending = sorted(dag, key=lambda s: -after[s])  # stable: dvc.yaml's order among equals
    running: dict[PrefectFuture, str] = {}
    final: dict[str, PrefectFuture | None] = {}
    completed: set[str] = set()
    blocked: set[str] = set()  # failed, or never started
    while pending or running:
        for stage in list(pending):
            if any(up in blocked for up in dag[stage]):
                pending.remove(stage)
                blocked.add(stage)
                final[stage] = None
            elif len(running) < jobs and all(up in completed for up in dag[stage]):
                pending.remove(stage)
                running[start(stage)] = stage
        if not running:
            break
        done = next(as_completed(list(running)))
        done.wait()  # sets its final state here (its state property would ask the API, which may lag)
        stage = running.pop(done)
        final[stage] = done
        (completed if done.state.is_completed() else blocked).add(stage)
    return {stage: final.get(stage) for stage in dag}


def dag_graph(dag: dict[str, list[str]]) -> nx.DiGraph:
    """``dag`` as a networkx graph, edges from a stage to the stages that need it."""
    graph = nx.DiGraph()
    graph.add_nodes_from(dag)
    graph.add_edges_from((up, stage) for stage, ups in dag.items() for up in ups)
    return graph


def ancestors(dag: dict[str, list[str]], stage: str) -> set[str]:
    """Every stage ``stage`` needs, directly or not."""
    return nx.ancestors(dag_graph(dag), stage)


def summary(dataset: str, parent: str, jobs: int, outcome: dict[str, dict], root: Path | None) -> str:
    """The flow run's markdown artifact: each stage's status and seconds, then the model table and the
    promotion gate's decision from ``root``'s reports (this run's, or the last ones when their stages were up
    to date; None when the run failed)."""
    lines = [
        f"## s2gr pipeline on {dataset}",
        f"MLflow parent run `{parent}`; up to {jobs} stage(s) at a time",
        "",
        "| stage | status | seconds |",
        "|---|---|---|",
        *[f"| {r['stage']} | {r['status']} | {r['seconds']} |" for r in outcome.values()],
        "",
    ]
    if root is None:
        return "\n".join([*lines, "No model table or promotion decision: the run failed."])
    for rel, missing in ((MODEL_TABLE, "No model table yet"), (PROMOTION, "No promotion decision yet")):
        path = root / rel
        text = path.read_text() if path.is_file() else f"{missing}: {rel} does not exist."
        lines += [text.rstrip(), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.pipeline", description=s2gr_pipeline.__doc__)
    parser.add_argument("--refresh-data", action="store_true", help="force the fetch stage (new data drop)")
    parser.add_argument("--force", action="store_true", help="re-run every stage")
    parser.add_argument("--until", metavar="STAGE", help="run only STAGE and the stages it depends on")
    parser.add_argument(
        "--jobs",
        type=int,
        metavar="N",
        help="run up to N independent stages at a time, each with 1/N of the cores (default: orchestration.jobs)",
    )
    args = parser.parse_args(argv)
    state = s2gr_pipeline(
        refresh_data=args.refresh_data, force=args.force, until=args.until, jobs=args.jobs, return_state=True
    )
    return 0 if state.is_completed() else 1


if __name__ == "__main__":
    sys.exit(main())
