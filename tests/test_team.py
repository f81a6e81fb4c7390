"""The team profile (infra/team.sh) on loopback: PostgreSQL behind MLflow and Prefect, MLflow artifacts
and a DVC remote on an S3-compatible store (moto's server). The whole pipeline runs through Prefect
against it; a second clone then pulls what the first computed and reproduces nothing.

PostgreSQL comes from Debian's package: the setup installs it when it is missing (as root, with apt)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from s2gr_core.stages import STAGES
from tests.conftest import BIN, REPO, apt_install, project_env

pytestmark = pytest.mark.team
TEAM = REPO / "infra" / "team.sh"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ensure_postgresql() -> None:
    """Debian's PostgreSQL server, installed by this setup where it is missing."""
    apt_install(
        "postgresql", lambda: any(Path(d, "initdb").is_file() for d in Path("/usr/lib/postgresql").glob("*/bin"))
    )


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The profile started on free loopback ports; the environment that points a project at it."""
    ensure_postgresql()
    ports = {f"TEAM_{name}_PORT": str(free_port()) for name in ("PG", "S3", "MLFLOW", "PREFECT")}
    env = {**os.environ, "TEAM_STATE": str(tmp_path_factory.mktemp("team")), **ports}
    started = subprocess.run([str(TEAM), "start"], env=env, capture_output=True, text=True, timeout=300, check=False)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        health = subprocess.run([str(TEAM), "health"], env=env, capture_output=True, text=True, check=False)
        assert health.returncode == 0 and health.stdout.count(": ok") == 4, health.stdout
        exports = subprocess.run([str(TEAM), "env"], env=env, capture_output=True, text=True, check=True).stdout
        pairs = [item.split("=", 1) for line in exports.splitlines() for item in line.removeprefix("export ").split()]
        yield {**env, **dict(pairs)}
    finally:
        subprocess.run([str(TEAM), "purge"], env=env, capture_output=True, timeout=120, check=False)


def run(cmd: list[str], root: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=root, env=project_env(root, **env), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_the_pipeline_on_the_team_profile_and_a_clone_that_pulls_instead_of_recomputing(
    team: dict[str, str], project: Path, tmp_path: Path
) -> None:
    import boto3
    import httpx
    from mlflow.tracking import MlflowClient

    stages = [s.name for s in STAGES]
    flow = run([sys.executable, "-m", "flows.pipeline"], project, team)
    assert f"stages run: {', '.join(stages)}" in flow.stdout + flow.stderr

    # MLflow: the runs are in PostgreSQL (through the server), their artifacts in the S3 bucket
    client = MlflowClient(tracking_uri=team["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name("s2gr").experiment_id], max_results=500)
    assert {r.data.tags.get("stage") for r in runs} >= set(stages)
    assert all(r.info.artifact_uri.startswith("mlflow-artifacts:") for r in runs)
    s3 = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{team['TEAM_S3_PORT']}",
        region_name="us-east-1",
        aws_access_key_id=team["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=team["AWS_SECRET_ACCESS_KEY"],
    )
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket="s2gr-mlflow")
            for o in page.get("Contents", [])]  # fmt: skip
    assert any(k.endswith("validation.md") for k in keys) and any(k.endswith("MLmodel") for k in keys)
    counted = subprocess.run(
        ["psql", "-h", "127.0.0.1", "-p", team["TEAM_PG_PORT"], "-U", "s2gr", "-d", "mlflow", "-tAc",
         "SELECT count(*) FROM runs"], capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert int(counted.stdout) >= len(runs)
    # Prefect: the flow run is recorded by the server on PostgreSQL
    flow_runs = httpx.post(f"{team['PREFECT_API_URL']}/flow_runs/filter", json={}, timeout=30).json()
    assert flow_runs and all(r["state_type"] == "COMPLETED" for r in flow_runs)

    # DVC: everything the run computed goes to the remote, with the run cache
    run([str(TEAM), "dvc-remote", str(project)], REPO, team)
    pushed = run([str(BIN / "dvc"), "push", "--run-cache"], project, team)
    assert "pushed" in pushed.stdout
    run(["git", "add", "-A"], project, team)
    run(["git", "-c", "user.name=ci", "-c", "user.email=ci@localhost", "commit", "-qm", "first run"], project, team)

    # a second clone pulls instead of recomputing
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(project), str(clone)], tmp_path, team)
    run([str(TEAM), "dvc-remote", str(clone)], REPO, team)
    run([str(BIN / "dvc"), "pull", "--run-cache"], clone, team)
    again = run([str(BIN / "dvc"), "repro"], clone, team)
    assert "Running stage" not in again.stdout and "Data and pipelines are up to date" in again.stdout
    for name in ("models/s2gr/best.pt", "predictions/s2gr", "reports/promotion.json", "data/sids"):
        assert (clone / name).exists(), name
