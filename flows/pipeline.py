"""The ``s2gr-pipeline`` Prefect flow: every DVC stage, in DAG order, one task each.

Run it without any server (Prefect starts an ephemeral one)::

    python -m flows.pipeline                  # what `make flow` does
    python -m flows.pipeline --refresh-data   # re-read the data source first (a new data drop)
    python -m flows.pipeline --until sids     # only `sids` and the stages it depends on

or against a Prefect server by setting ``PREFECT_API_URL``. Deployments (weekly
retraining) are declared in ``prefect.yaml``. The flow opens the MLflow parent run;
each stage's own process logs its nested run under it.
"""

from __future__ import annotations

import argparse
import sys

from s2gr import env

env.configure(env.find_root() if __name__ == "__main__" else None)

from prefect import flow, get_run_logger  # noqa: E402
from prefect.artifacts import create_markdown_artifact  # noqa: E402
from prefect.runtime import flow_run  # noqa: E402

from tasks.dvc import run_dvc_stage, stage_order  # noqa: E402

FETCH_STAGE = "fetch"
PROMOTION = "reports/promotion.md"


@flow(name="s2gr-pipeline", log_prints=True)
def s2gr_pipeline(refresh_data: bool = False, force: bool = False, until: str | None = None) -> list[dict]:
    """Reproduce the DVC pipeline; DVC decides which stages are stale.

    Args:
        refresh_data: force the ``fetch`` stage, so a new data drop in the data
            directory is picked up; downstream stages re-run only if the raw
            files actually changed.
        force: re-run every stage even if DVC considers it up to date.
        until: run only this stage and the stages it depends on (all stages when empty).
    """
    from s2gr.tracking import end_run, start_pipeline_run
    from s2gr_core.config import load_params

    root = env.find_root()
    env.configure(root)
    logger = get_run_logger()
    params = load_params(root / "params.yaml")
    order = stage_order(root, until or None)
    retrying = run_dvc_stage.with_options(
        retries=params.orchestration.retries, retry_delay_seconds=params.orchestration.retry_delay_seconds
    )
    parent = start_pipeline_run(
        root, params.tracking.experiment, params.data.name, trigger=f"prefect flow run {flow_run.name}"
    )
    logger.info("MLflow parent run %s; stages in order: %s", parent, ", ".join(order))
    results: list[dict] = []
    ok = False
    try:
        for stage in order:
            results.append(retrying(stage, str(root), parent, force=force or (refresh_data and stage == FETCH_STAGE)))
        ok = True
    finally:
        end_run(root, parent, ok)
        ran = [r["stage"] for r in results if r["status"] == "ran"]
        failed = order[len(results)] if not ok and len(results) < len(order) else None
        rows = [f"| {r['stage']} | {r['status']} | {r['seconds']} |" for r in results]
        if failed:
            rows.append(f"| {failed} | FAILED | |")
        promotion = root / PROMOTION
        create_markdown_artifact(
            key="s2gr-pipeline-summary",
            markdown="\n".join(
                [
                    f"## s2gr pipeline on {params.data.name}",
                    f"MLflow parent run `{parent}`",
                    "",
                    "| stage | status | seconds |",
                    "|---|---|---|",
                    *rows,
                    "",
                    # the gate's decision (the promote stage's, this run's or the last one's when it was up to date)
                    promotion.read_text() if ok and promotion.is_file() else "No promotion decision: the run failed.",
                ]
            ),
            description="Which DVC stages ran, were skipped or failed, and which model serves",
        )
        logger.info("stages run: %s", ", ".join(ran) or "none (everything up to date)")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.pipeline", description=s2gr_pipeline.__doc__)
    parser.add_argument("--refresh-data", action="store_true", help="force the fetch stage (new data drop)")
    parser.add_argument("--force", action="store_true", help="re-run every stage")
    parser.add_argument("--until", metavar="STAGE", help="run only STAGE and the stages it depends on")
    args = parser.parse_args(argv)
    state = s2gr_pipeline(refresh_data=args.refresh_data, force=args.force, until=args.until, return_state=True)
    return 0 if state.is_completed() else 1


if __name__ == "__main__":
    sys.exit(main())
