"""Real servers on 127.0.0.1: the weekly deployment runs on a process worker, logging to an MLflow server."""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import BIN, REPO, bundle, project_env

pytestmark = pytest.mark.servers

UNTIL_SASREC = {"fetch", "ingest", "validate", "split", "train_sasrec"}  # train_sasrec and what it depends on


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server(cmd: list[str], health: str, env: dict[str, str], log: Path, timeout: float = 120) -> Iterator[None]:
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + timeout
        while True:
            with contextlib.suppress(OSError), urllib.request.urlopen(health, timeout=2) as resp:
                if resp.status == 200:
                    break
            if proc.poll() is not None or time.time() > deadline:
                raise AssertionError(f"{cmd[:3]} did not come up:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        yield
    finally:
        stop(proc, 20)


def stop(proc: subprocess.Popen, timeout: float) -> None:
    """SIGTERM a process started in a session of its own; SIGKILL its whole group if it has not exited
    after ``timeout`` s (a loaded CI machine once kept a Prefect worker shutting down for over 30 s)."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def cli(cmd: list[str], root: Path, env: dict[str, str], timeout: float = 300) -> str:
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{cmd} failed:\n{output[-4000:]}"
    return output


def mlflow_server_cmd(port: int, store: Path) -> list[str]:
    """A real MLflow tracking server on 127.0.0.1 with its SQLite store and artifacts under ``store``."""
    return [
        str(BIN / "mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{store / 'mlflow-server.db'}",
        "--artifacts-destination",
        str(store / "mlflow-artifacts"),
    ]


def test_stages_against_a_tracking_server_that_stops_and_comes_back(project: Path, tmp_path: Path) -> None:
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    env = project_env(project, MLFLOW_TRACKING_URI=uri)
    s2gr = str(BIN / "s2gr")
    with server(mlflow_server_cmd(port, tmp_path), f"{uri}/health", env, tmp_path / "mlflow.log"):
        cli([s2gr, "stage", "fetch"], project, env)
    # down: the next stage refuses to start within seconds, as a transient fault (exit 3), and writes nothing
    started = time.time()
    proc = subprocess.run([s2gr, "stage", "ingest"], cwd=project, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert time.time() - started < 30
    assert f"MLflow tracking server {uri} is not answering" in proc.stderr and "Traceback" not in proc.stderr
    assert not (project / "data" / "staged").exists()
    # back (same store): the retried stage runs and both stages are on record
    with server(mlflow_server_cmd(port, tmp_path), f"{uri}/health", env, tmp_path / "mlflow-2.log"):
        cli([s2gr, "stage", "ingest"], project, env)
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        runs = client.search_runs([client.get_experiment_by_name("s2gr").experiment_id])
        stages = {r.data.tags.get("stage"): r.info.status for r in runs if r.data.tags.get("stage")}
        assert stages == {"fetch": "FINISHED", "ingest": "FINISHED"}


def test_scheduled_deployment_runs_on_worker_and_logs_to_mlflow_server(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for pkg in ("flows", "tasks"):  # the deployment's entrypoint lives in the project
        shutil.copytree(REPO / pkg, project / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    ml_port, pf_port = free_port(), free_port()
    env = project_env(project, PREFECT_HOME=str(tmp_path / "prefect-server-home"))
    ml_uri, pf_api = f"http://127.0.0.1:{ml_port}", f"http://127.0.0.1:{pf_port}/api"
    mlflow_cmd = mlflow_server_cmd(ml_port, tmp_path)
    prefect_cmd = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(pf_port)]
    with (
        server(mlflow_cmd, f"{ml_uri}/health", env, tmp_path / "mlflow.log"),
        server(prefect_cmd, f"{pf_api}/health", env, tmp_path / "prefect.log"),
    ):
        client_env = {**env, "PREFECT_API_URL": pf_api, "MLFLOW_TRACKING_URI": ml_uri}
        prefect = str(BIN / "prefect")
        cli([prefect, "work-pool", "create", "s2gr-process", "--type", "process"], project, client_env)
        cli([prefect, "--no-prompt", "deploy", "--name", "weekly-retrain"], project, client_env)
        inspected = cli([prefect, "deployment", "inspect", "s2gr-pipeline/weekly-retrain"], project, client_env)
        assert "0 3 * * 1" in inspected and "refresh_data" in inspected
        # up to SASRec's training: what the worker and servers add is there; every stage under the flow is
        # test_e2e's, and ran two more minutes here
        run = [prefect, "deployment", "run", "s2gr-pipeline/weekly-retrain", "--param", 'until="train_sasrec"']
        cli(run, project, client_env)
        worker = cli(
            [prefect, "worker", "start", "--pool", "s2gr-process", "--run-once"], project, client_env, timeout=400
        )
        assert "Completed" in worker, worker[-3000:]

        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=ml_uri)
        exp = client.get_experiment_by_name("s2gr")
        runs = client.search_runs([exp.experiment_id])
        parents = [r for r in runs if r.data.tags.get("s2gr.kind") == "pipeline"]
        assert len(parents) == 1 and parents[0].info.status == "FINISHED"
        stages = {r.data.tags["stage"] for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id}
        assert stages == UNTIL_SASREC
        split = next(r for r in runs if r.data.tags.get("stage") == "split")
        assert "split/data.json" in {a.path for a in client.list_artifacts(split.info.run_id, "split")}
        sasrec = next(r for r in runs if r.data.tags.get("stage") == "train_sasrec")
        assert client.list_artifacts(sasrec.info.run_id, "train_sasrec")
        assert not client.search_logged_models([exp.experiment_id])  # only the promote stage logs models
        assert_pyfunc_through_the_artifact_proxy(project, sasrec.info.run_id, ml_uri, tmp_path, monkeypatch)


def assert_pyfunc_through_the_artifact_proxy(
    project: Path, run_id: str, uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The promote stage's pyfunc of the trained SASRec, logged to and loaded back from the MLflow server."""
    import mlflow
    import pandas as pd

    from s2gr.registry import log_recommender
    from s2gr_core.config import load_params

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    packed = bundle(project, load_params(project / "params.yaml"), "sasrec", tmp_path / "bundle")
    model = mlflow.pyfunc.load_model(log_recommender(project, run_id, packed, "sasrec"))
    keys = pd.read_parquet(project / "data/processed/items.parquet")["item_key"].astype(str).tolist()
    answer = model.predict(pd.DataFrame({"history": [keys[:3]]}), params={"k": 4})
    assert len(answer["item_keys"][0]) == 4 and set(answer["item_keys"][0]) <= set(keys)


RUNS_OF_DEPLOYMENT = """
import json
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
with get_client(sync_client=True) as client:
    deployment = client.read_deployment_by_name("s2gr-pipeline/weekly-retrain")
    runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])))
    print(json.dumps([{"by": r.created_by.type if r.created_by else None, "parameters": r.parameters} for r in runs]))
"""


def test_a_data_drop_event_runs_the_retrain_deployment(project: Path, tmp_path: Path) -> None:
    """`s2gr data-drop` emits the event prefect.yaml's trigger expects; the server's automation then creates a
    flow run of weekly-retrain with refresh_data (a worker would run it, as in the test above)."""
    import json

    for pkg in ("flows", "tasks"):
        shutil.copytree(REPO / pkg, project / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    port = free_port()
    env = project_env(project, PREFECT_HOME=str(tmp_path / "prefect-server-home"))
    api = f"http://127.0.0.1:{port}/api"
    prefect_cmd = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with server(prefect_cmd, f"{api}/health", env, tmp_path / "prefect.log"):
        client_env = {**env, "PREFECT_API_URL": api}
        prefect = str(BIN / "prefect")
        cli([prefect, "work-pool", "create", "s2gr-process", "--type", "process"], project, client_env)
        cli([prefect, "--no-prompt", "deploy", "--name", "weekly-retrain"], project, client_env)
        assert "s2gr.data.dropped" in cli([prefect, "automation", "ls"], project, client_env)

        said = cli([str(BIN / "s2gr"), "data-drop", "--note", "test drop"], project, client_env)
        assert "emitted s2gr.data.dropped for ml-100k" in said
        deadline, triggered = time.time() + 90, []
        while not triggered and time.time() < deadline:
            time.sleep(2)
            listed = cli([str(BIN / "python"), "-c", RUNS_OF_DEPLOYMENT], project, client_env)
            runs = json.loads(listed.splitlines()[-1])
            triggered = [r for r in runs if r["by"] == "AUTOMATION"]
        assert len(triggered) == 1, runs
        assert triggered[0]["parameters"]["refresh_data"] is True

    no_server = subprocess.run([str(BIN / "s2gr"), "data-drop"], cwd=project, env=env, capture_output=True, text=True)
    assert no_server.returncode == 2 and "set PREFECT_API_URL" in no_server.stderr


def test_a_benchmark_grid_runs_on_a_work_pools_workers(tmp_path: Path) -> None:
    """`--deployment s2gr-bench-run/bench-run`: each run of the grid is a flow run that a process worker
    of the pool `s2gr-bench` runs (up to the pool's limit at a time; whether two overlap depends on the
    worker's polling, so it is not asserted), under the grid's time budget, and a run the budget stopped
    finishes from its checkpoint on the pool as well."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tests.test_bench import FAST, SLOW, make_run  # the bench runner's own fixtures; puts bench/ on sys.path

    run_all = importlib.import_module("common").run_all  # bench/common.py

    port = free_port()
    env = project_env(REPO, PREFECT_HOME=str(tmp_path / "prefect-server-home"))
    api = f"http://127.0.0.1:{port}/api"
    prefect = str(BIN / "prefect")
    with server(
        [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        f"{api}/health",
        env,
        tmp_path / "prefect.log",
    ):
        client_env = {**env, "PREFECT_API_URL": api}
        cli([prefect, "work-pool", "create", "s2gr-bench", "--type", "process"], REPO, client_env)
        cli([prefect, "work-pool", "set-concurrency-limit", "s2gr-bench", "2"], REPO, client_env)
        cli([prefect, "--no-prompt", "deploy", "--name", "bench-run"], REPO, client_env)
        with open(tmp_path / "worker.log", "w") as out:
            worker = subprocess.Popen(
                [prefect, "worker", "start", "--pool", "s2gr-bench"],
                cwd=REPO,
                env=client_env,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        try:
            slow = make_run(tmp_path, "slow", SLOW, str(tmp_path / "slow" / "last.pt"))
            fast = make_run(tmp_path, "fast", FAST)
            with temporary_settings(updates={PREFECT_API_URL: api}):
                results = run_all([slow, fast], jobs=1, deadline_minutes=0.5, deployment="s2gr-bench-run/bench-run")
                with get_client(sync_client=True) as client:
                    flow_runs = [r for r in client.read_flow_runs() if r.deployment_id is not None]
        finally:
            stop(worker, 30)
    by_name = {r["name"]: r for r in results}
    assert set(by_name) == {"slow", "fast"} and by_name["slow"]["stopped_at_epoch"] == 2
    assert "stopped_at_epoch" not in by_name["fast"]
    # slow ran twice (stopped, then finished from its checkpoint), fast once; every run on the pool's worker
    assert sorted(r.name for r in flow_runs) == ["fast", "slow", "slow"], (tmp_path / "worker.log").read_text()[-3000:]
    assert all(r.state_name == "Completed" for r in flow_runs)
    assert "STOPPED by the time budget" in slow.log.read_text()
