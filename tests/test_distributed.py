"""Data-parallel training with torchrun and gloo on the CPU: two ranks train as one process on the
same global batch, a killed run resumes under another world size, and `s2gr stage` relaunches itself
under torchrun when ``distributed.world_size`` asks for it (rank 0 alone logs and publishes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from s2gr_core.config import params_from_dict
from s2gr_core.models.distributed import World
from tests.conftest import BIN, REPO, UNTIL_SIDS, project_env, repo_params
from tests.fixtures import write_ml100k

# Float rounding differs between a batch and its two shares; AdamW carries it to about 1e-4 in three
# epochs here. Leaving S2GR's in-batch negatives to each share instead moves weights by about 1e-2.
ATOL = 1e-3


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project folder (params.yaml, dvc.yaml) with the fixture's split and SIDs from the pipeline's stages."""
    from s2gr_core.stages import get_stage

    base = tmp_path_factory.mktemp("ddp")
    write_ml100k(base / "datasets" / "ml-100k")
    raw = repo_params(data={"source_dir": str(base / "datasets")})
    root = base / "project"
    for name in UNTIL_SIDS:
        get_stage(name).run(params_from_dict(raw), root)
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    (root / "dvc.yaml").write_text((REPO / "dvc.yaml").read_text())
    return root


def train(root: Path, ranks: int, family: str, ckpt: Path, *extra: str, ok: bool = True) -> dict:
    """Run tests/ddp_worker.py as one process or ``ranks`` torchrun ranks; its report (weights, history)."""
    launcher = [sys.executable, "-m"]
    if ranks > 1:
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--log-dir={ckpt / 'logs'}"]
        launcher = [*torchrun, f"--nproc-per-node={ranks}", "-m"]
    out = ckpt / "final.pt"
    cmd = [
        *launcher,
        "tests.ddp_worker",
        "--root",
        str(root),
        "--family",
        family,
        "--ckpt",
        str(ckpt),
        "--out",
        str(out),
    ]
    env = {**project_env(root), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([*cmd, *extra], cwd=REPO, capture_output=True, text=True, env=env, check=False)
    if not ok:
        return {"returncode": proc.returncode, "log": proc.stdout + proc.stderr}
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads(out.with_suffix(".json").read_text())
    return {**report, "weights": torch.load(out, weights_only=True), "log": proc.stdout}


def assert_same_training(a: dict, b: dict) -> None:
    assert [r["epoch"] for r in a["history"]] == [r["epoch"] for r in b["history"]]
    losses = [[r["train_loss"] for r in run["history"]] for run in (a, b)]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-4)
    assert a["weights"].keys() == b["weights"].keys()
    for name, weight in a["weights"].items():
        torch.testing.assert_close(b["weights"][name], weight, atol=ATOL, rtol=ATOL, msg=name)


@pytest.mark.parametrize(
    ("family", "extra"),
    [("sasrec", ()), ("tiger", ()), ("s2gr", ("--aux", "0.5")), ("s2gr", ("--aux", "0")), ("sft", ())],
    ids=["sasrec", "tiger", "s2gr-all-losses", "s2gr-unused-heads", "sidreasoner-sft"],
)
def test_two_ranks_train_as_one_process_on_the_same_global_batch(root: Path, tmp_path: Path, family: str, extra):
    # 33 = shares of 17 and 16: each rank's mean loss must be weighted by its share to give the batch mean
    one = train(root, 1, family, tmp_path / "one", "--batch", "33", *extra)
    two = train(root, 2, family, tmp_path / "two", "--batch", "33", *extra)
    assert "rank 0 of 2 (DDP, gloo)" in two["log"] and "rank 0 of" not in one["log"]
    assert two["log"].count("epoch   1") == 1  # rank 0 alone prints
    assert_same_training(one, two)


@pytest.mark.parametrize(("family", "first", "then"), [("s2gr", 2, 1), ("sasrec", 1, 2)])
def test_a_killed_run_resumes_under_another_world_size(
    root: Path, tmp_path: Path, family: str, first: int, then: int
) -> None:
    args = ("--batch", "32", "--epochs", "3")
    reference = train(root, 1, family, tmp_path / "reference", *args)
    killed = train(root, first, family, tmp_path / "run", *args, "--kill-epoch", "2", ok=False)
    # one process dies of the signal itself; torchrun reports its rank's signal and stops the others
    assert killed["returncode"] == -9 or "Signal 9 (SIGKILL)" in killed["log"], killed["log"][-2000:]
    resumed = train(root, then, family, tmp_path / "run", *args)
    assert resumed["resumed_from"] == 1 and "resuming from epoch 1 checkpoint" in resumed["log"]
    assert_same_training(reference, resumed)


@pytest.fixture
def two_processes(root: Path):
    """The project with ``distributed.world_size: 2`` (put back afterwards)."""
    saved = (root / "params.yaml").read_text()
    raw = yaml.safe_load(saved)
    raw["distributed"]["world_size"] = 2
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    yield root
    (root / "params.yaml").write_text(saved)


def test_s2gr_stage_relaunches_itself_under_torchrun(two_processes: Path) -> None:
    root = two_processes
    proc = subprocess.run([str(BIN / "s2gr"), "stage", "train_sasrec"], cwd=root, capture_output=True, text=True,
                          env=project_env(root), check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "torchrun: 2 data-parallel processes" in proc.stdout and "rank 0 of 2 (DDP, gloo)" in proc.stdout
    assert proc.stdout.count("[train_sasrec] done in") == 1
    assert (root / "predictions" / "sasrec").is_dir() and (root / "metrics" / "train_sasrec.json").is_file()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("s2gr").experiment_id])
    stage_runs = [r for r in runs if r.data.tags.get("stage") == "train_sasrec"]
    assert len(stage_runs) == 1 and stage_runs[0].data.tags["world_size"] == "2"

    # a rank killed as it publishes: the launcher exits as a killed stage does (128 + 9), not "rejected"
    killed = subprocess.run([str(BIN / "s2gr"), "stage", "train_sasrec", "--no-track"], cwd=root, capture_output=True,
                            text=True, env=project_env(root, S2GR_FAULT="best.pt:1"), check=False)  # fmt: skip
    assert killed.returncode == 137, killed.stdout[-2000:] + killed.stderr[-3000:]


def test_world_shares_and_scales() -> None:
    batch = np.arange(7)
    shares = [World(r, 3).shard(batch) for r in range(3)]
    assert sorted(np.concatenate(shares).tolist()) == batch.tolist()
    assert [World(r, 3).rows(7).tolist() for r in range(3)] == [s.tolist() for s in shares]
    # the weighted share means average (as DDP averages) to the batch mean
    values = torch.arange(7.0)
    weighted = [World(r, 3).scale(values[s].mean(), len(s), 7) for r, s in enumerate(shares)]
    assert torch.stack(weighted).mean().item() == pytest.approx(values.mean().item())
    assert World().scale(torch.tensor(2.0), 1, 4).item() == 2.0  # one process: the loss as it is


def test_other_stages_run_on_rank_0_alone_under_torchrun(root: Path, tmp_path: Path) -> None:
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    proc = subprocess.run([*torchrun, f"--log-dir={tmp_path}", "-m", "s2gr.cli", "stage", "split", "--no-track"],
                          cwd=root, capture_output=True, text=True, env=project_env(root), check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "rank 1: not a data-parallel stage; rank 0 runs it alone" in proc.stdout
    assert proc.stdout.count("[split] done in") == 1
