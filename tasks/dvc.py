"""Thin Prefect tasks around DVC: DVC decides what is stale, Prefect adds retries, logs and scheduling.

A stage task runs ``dvc --wait-for-lock repro --single-item STAGE``: DVC re-runs the stage only
if its deps, params or outs changed, so no staleness logic lives here. DVC holds its repository
lock only while it checks and records a stage, not while the stage's command runs (it guards the
command's deps and outs with read/write locks instead), so stages that do not depend on each other
can run side by side; ``--wait-for-lock`` makes one wait for another's check or record instead of
failing. Each side-by-side stage occupies its cores in a Prefect global concurrency limit named
after the machine, so flow runs sharing a machine never ask for more cores than it has.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task

from s2gr_core.cores import CORES_VARIABLE

# `s2gr stage` exits 1 when it rejects its input (bad data, bad config): retrying
# cannot help. Any other failure (a crash, tracking down: exit 3; DVC's own errors such as
# another `dvc repro` holding the lock) is worth a retry.
REJECTED_INPUT = 1


class StageError(RuntimeError):
    """``exit_code``: the stage command's own exit status, or None when DVC failed before or
    around it (``dvc_code`` is then DVC's)."""

    def __init__(self, stage: str, exit_code: int | None, tail: str, dvc_code: int | None = None):
        self.stage, self.exit_code = stage, exit_code
        how = f"exit {exit_code}" if exit_code is not None else f"dvc exit {dvc_code}, the stage did not finish"
        super().__init__(f"stage {stage!r} failed ({how}):\n{tail}")


def stage_order(root: Path, until: str | None = None) -> list[str]:
    """Stage names of ``dvc.yaml`` in topological (run) order, from DVC's own graph.

    ``until`` keeps only that stage and the stages it depends on (like ``dvc repro STAGE``).
    """
    return list(stage_dag(root, until))


def stage_dag(root: Path, until: str | None = None) -> dict[str, list[str]]:
    """Each stage of :func:`stage_order`, in that order, with the stages whose outputs it reads.

    Example: ``{"fetch": [], "ingest": ["fetch"], ..., "train_sasrec": ["split"], ...}``.
    """
    import networkx as nx
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        graph = repo.index.graph  # edges point from a stage to the stages it depends on
        written = {stage.name: i for i, stage in enumerate(repo.index.stages)}
        # among the valid orders, the one closest to how dvc.yaml lists the stages: stable and readable
        ordered = list(nx.lexicographical_topological_sort(graph.reverse(), key=lambda s: written[s.name]))
        if until is not None:
            target = next((s for s in ordered if s.name == until), None)
            if target is None:
                names = ", ".join(s.name for s in ordered)
                raise ValueError(f"unknown stage {until!r}; dvc.yaml has: {names}")
            keep = nx.descendants(graph, target) | {target}
            ordered = [s for s in ordered if s in keep]
        return {stage.name: sorted(up.name for up in graph.successors(stage)) for stage in ordered}


def _retry_unless_rejected(task: Any, task_run: Any, state: Any) -> bool:
    try:
        state.result()
    except StageError as exc:
        return exc.exit_code != REJECTED_INPUT
    except Exception:
        return True
    return False


def stage_env(parent_run_id: str | None, cores: int | None = None) -> dict[str, str]:
    """Subprocess environment: the venv's ``s2gr`` on PATH, the MLflow parent run id and, for a
    stage that shares the machine, its cores (``S2GR_CORES``; ``OMP_NUM_THREADS`` for the
    libraries that size their thread pools from it)."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    if parent_run_id:
        env["S2GR_MLFLOW_PARENT_RUN_ID"] = parent_run_id
    if cores is not None:
        env[CORES_VARIABLE] = env["OMP_NUM_THREADS"] = str(cores)
    return env


def core_limit(cores: int) -> tuple[str, int]:
    """This machine's global concurrency limit, one slot per core: its name and its slots.

    Created with ``cores`` slots on the Prefect server the first time (a flow run on the
    ephemeral server has its own); an existing limit keeps the slots it has, which an operator
    may change (``prefect gcl update NAME --limit N``).
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    name = f"s2gr-cores-{re.sub(r'[^A-Za-z0-9-]', '-', socket.gethostname())}"
    with get_client(sync_client=True) as client:
        try:
            return name, client.read_global_concurrency_limit_by_name(name).limit
        except ObjectNotFound:
            with suppress(ObjectAlreadyExists):  # another flow run on this machine made it first
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=cores))
            return name, client.read_global_concurrency_limit_by_name(name).limit


@task(name="dvc-stage", task_run_name="dvc repro {stage}", retry_condition_fn=_retry_unless_rejected)
def run_dvc_stage(
    stage: str,
    root: str,
    parent_run_id: str | None = None,
    force: bool = False,
    cores: int | None = None,
    limit: str | None = None,
    occupy: int = 1,
) -> dict[str, Any]:
    """Reproduce one DVC stage; returns ``{"stage", "status": "ran"|"skipped", "seconds"}``.

    ``cores``: the cores the stage may use (all of the process's when None); ``limit``: a global
    concurrency limit it holds ``occupy`` slots of while it runs (see :func:`core_limit`).
    """
    if limit is None:
        return _repro(stage, root, parent_run_id, force, cores)
    from prefect.concurrency.sync import concurrency

    with concurrency(limit, occupy=occupy, strict=True):
        return _repro(stage, root, parent_run_id, force, cores)


def _repro(stage: str, root: str, parent_run_id: str | None, force: bool, cores: int | None) -> dict[str, Any]:
    logger = get_run_logger()
    cmd = [str(Path(sys.executable).parent / "dvc"), "--wait-for-lock", "repro", "--single-item", stage]
    if force:
        cmd.insert(3, "--force")
    started = time.time()
    proc = subprocess.Popen(
        cmd, cwd=root, env=stage_env(parent_run_id, cores), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        if line:
            lines.append(line)
            logger.info(line)
    code = proc.wait()
    output = "\n".join(lines)
    if code != 0:
        match = re.search(r"exited with (\d+)", output)
        raise StageError(stage, int(match.group(1)) if match else None, "\n".join(lines[-25:]), dvc_code=code)
    status = "skipped" if f"Stage '{stage}' didn't change" in output else "ran"
    return {"stage": stage, "status": status, "seconds": round(time.time() - started, 2)}
