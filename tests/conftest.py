from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml

from s2gr_core.config import Params, params_from_dict
from tests.fixtures import write_beauty, write_ml100k

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def apt_install(package: str, present: Callable[[], bool]) -> None:
    """Debian's ``package``, installed by the test setup where ``present()`` says it is missing (root, apt-get).

    Test workers may both need a package: a file lock makes the second wait for the first's apt-get."""
    if present():
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.fail(f"{package} is missing and cannot be installed here (needs root and apt-get): install {package}")
    apt = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with open(Path(tempfile.gettempdir()) / "s2gr-tests-apt.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if present():
            return
        subprocess.run(["apt-get", "update", "-qq"], env=apt, check=True, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", package], env=apt, check=True, timeout=900)


os.environ.update(
    {
        "DO_NOT_TRACK": "true",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DVC_NO_ANALYTICS": "1",
        "GX_ANALYTICS_ENABLED": "false",
        "HF_HUB_OFFLINE": "1",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # as the Makefile: no job runner beside test servers
    }
)
os.environ.pop("S2GR_DATA_DIR", None)
os.environ.pop("S2GR_MLFLOW_PARENT_RUN_ID", None)
os.environ.pop("MLFLOW_TRACKING_URI", None)


# The fixture catalogue has 40 items: the codebook gets fewer codes than items, and few epochs.
TINY = {
    "codebook": {"codebook_size": 8, "epochs": 15, "batch_size": 16},
    "sids": {"clusters": 3},
    "gr": {"max_epochs": 2, "warmup_steps": 2},  # TIGER and S2GR
    "sidreasoner": {
        "model": {"vocab_size": 400, "hidden": 32, "layers": 1, "heads": 2, "kv_heads": 1, "head_dim": 16, "ffn": 64},
        "corpus": {"max_per_task": 40, "max_reasoning": 40},
        "align": {"max_epochs": 1, "warmup_steps": 2, "batch_size": 16},
        "reason": {"max_epochs": 1, "warmup_steps": 2, "batch_size": 16},
        "grpo": {"prompts": 4, "prompts_per_step": 2, "num_generations": 2, "max_completion_tokens": 12},
        "infer": {"max_think_tokens": 12},
    },
}


def merge(base: dict, overrides: dict) -> dict:
    """``base`` with ``overrides`` applied, nested sections merged key by key."""
    out = dict(base)
    for key, value in overrides.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def repo_params(**overrides: dict) -> dict:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    return merge(merge(raw, TINY), overrides)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data directory with tiny ml-100k and amazon-beauty copies in the real formats."""
    root = tmp_path / "datasets"
    write_ml100k(root / "ml-100k")
    write_beauty(root / "amazon-beauty")
    return root


@pytest.fixture
def params(data_dir: Path) -> Params:
    return params_from_dict(repo_params(data={"source_dir": str(data_dir)}))


@pytest.fixture
def project(tmp_path: Path, data_dir: Path) -> Path:
    """A throw-away copy of the project (dvc.yaml, params.yaml, code deps) as its own git + DVC repo."""
    root = tmp_path / "project"
    root.mkdir()
    for name in ("dvc.yaml", ".dvcignore", "prefect.yaml"):
        shutil.copy(REPO / name, root / name)
    for package in ("s2gr_core", "s2gr"):  # code deps of the stages (s2gr: the promote stage's registry code)
        shutil.copytree(REPO / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "params.yaml").write_text(yaml.safe_dump(repo_params(data={"source_dir": str(data_dir)})))
    (root / ".gitignore").write_text((REPO / ".gitignore").read_text())
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run([str(BIN / "dvc"), "init", "-q"], cwd=root, check=True)
    subprocess.run([str(BIN / "dvc"), "config", "core.analytics", "false"], cwd=root, check=True)
    return root


def project_env(root: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PREFECT_HOME"] = str(root / ".prefect")
    env.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect server for the in-process flows of the whole session (the benchmark grids,
    the pipeline flow's scheduler): each start costs about 15 s here."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


@pytest.fixture(scope="session")
def ml100k_embeddings(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """Real all-MiniLM-L6-v2 embeddings (40 x 384) of the fixture's MovieLens items."""
    from s2gr_core.data import get_dataset
    from s2gr_core.semantic.embed import encode, render_texts

    folder = write_ml100k(tmp_path_factory.mktemp("ml") / "ml-100k")
    items = get_dataset("ml-100k").parse(folder).items.sort_values("item_id")
    template = tuple(yaml.safe_load((REPO / "params.yaml").read_text())["embed"]["template"])
    return encode(render_texts(items, template), "all-MiniLM-L6-v2", 16, "cpu", progress=False)


UNTIL_SIDS = ("fetch", "ingest", "validate", "split", "embed", "cooccur", "codebook", "sids")


@pytest.fixture
def sid_root(params: Params, tmp_path: Path) -> Path:
    """A project folder with the fixture's split and SIDs, made by the pipeline's own stages."""
    from s2gr_core.stages import get_stage

    root = tmp_path / "proj"
    for name in UNTIL_SIDS:
        get_stage(name).run(params, root)
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Params]:
    """A project folder where the pipeline's stages trained and evaluated the three families (tiny)."""
    from s2gr_core.stages import get_stage

    base = tmp_path_factory.mktemp("serving")
    write_ml100k(base / "datasets" / "ml-100k")
    raw = repo_params(data={"source_dir": str(base / "datasets")})
    params = params_from_dict(raw)
    root = base / "project"
    for name in (*UNTIL_SIDS, *(f"{step}_{f}" for step in ("train", "evaluate") for f in ("sasrec", "tiger", "s2gr"))):
        get_stage(name).run(params, root)
    # what `s2gr serve` needs to find the project
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    (root / "dvc.yaml").write_text((REPO / "dvc.yaml").read_text())
    return root, params


def bundle(root: Path, params: Params, family: str, dest: Path) -> Path:
    """The serving bundle of ``family`` from a project folder's outputs (what the promote stage logs)."""
    from s2gr.promote import bundle_for

    data = root / "data"
    bundle_for(params, family, dest, root / "models" / family, data / "processed/items.parquet",
               data / "processed/interactions.parquet", data / "sids")  # fmt: skip
    return dest


def promote(root: Path, params: Params) -> dict:
    """Run the promote stage in this process under its own MLflow stage run; its promotion.json."""
    import json

    from s2gr.tracking import StageRun
    from s2gr_core.stages import get_stage

    run = StageRun(root, "promote", {}, params.tracking.experiment, params.data.name)
    get_stage("promote").run(params, root, reporter=run)
    run.close(ok=True)
    return json.loads((root / "reports/promotion.json").read_text())
