"""The benchmark runner (bench/common.py): parallel workers, a time budget, finishing stopped runs."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from common import Run, run_all, run_folder, worker_result

# A worker that trains "forever" unless told its budget is the 2 epochs it has checkpointed.
SLOW = textwrap.dedent(
    """
    import json, sys, time
    import torch
    if "max_epochs=2" in sys.argv:
        print("RESULT " + json.dumps({"name": "slow", "args": sys.argv[1:]}))
        sys.exit(0)
    torch.save({"epoch": 2}, sys.argv[1])
    print("epoch   2  loss 1.0", flush=True)
    time.sleep(120)
    """
)
FAST = 'import json; print("RESULT " + json.dumps({"name": "fast"}))'
BROKEN = "print('    print(\"RESULT \" + json.dumps(run_one()))'); raise SystemExit(1)"


def make_run(tmp_path: Path, name: str, code: str, *args: str) -> Run:
    folder = tmp_path / name
    folder.mkdir()
    return Run(name, [sys.executable, "-c", code, *args], folder, folder / "last.pt")


def test_runs_in_parallel_and_a_run_stopped_by_the_budget_finishes_from_its_checkpoint(tmp_path: Path) -> None:
    slow = make_run(tmp_path, "slow", SLOW, str(tmp_path / "slow" / "last.pt"), "--set", "threads=1")
    runs = [make_run(tmp_path, "fast", FAST), slow, make_run(tmp_path, "broken", BROKEN)]
    results = {r["name"]: r for r in run_all(runs, jobs=3, deadline_minutes=0.2)}
    assert set(results) == {"fast", "slow"}  # the broken run has no result and is not "finished"
    assert "stopped_at_epoch" not in results["fast"]
    assert results["slow"]["stopped_at_epoch"] == 2
    assert results["slow"]["args"][-3:] == ["--set", "threads=1", "max_epochs=2"]  # joined to its own --set
    log = slow.log.read_text()
    assert "epoch   2  loss 1.0" in log and log.count("== ") == 2  # the finishing pass appends to the log


def test_a_queued_run_never_starts_after_the_budget(tmp_path: Path) -> None:
    slow = make_run(tmp_path, "slow", SLOW, str(tmp_path / "slow" / "last.pt"))
    queued = make_run(tmp_path, "queued", FAST)
    results = run_all([slow, queued], jobs=1, deadline_minutes=0.2)
    assert [r["name"] for r in results] == ["slow"] and not queued.log.exists()


def test_worker_result_reads_only_the_latest_start(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    log.write_text('== first start\nRESULT {"a": 1}\n== second start\n    print("RESULT " + json.dumps(x))\n')
    assert worker_result(log) is None  # the old result and a traceback quoting the print do not count
    log.write_text(log.read_text() + 'RESULT {"a": 2}\n')
    assert worker_result(log) == {"a": 2}
    assert worker_result(tmp_path / "missing.log") is None


def test_run_folder_shares_the_data_and_keeps_outputs_apart(tmp_path: Path) -> None:
    (tmp_path / "data" / "split").mkdir(parents=True)
    (tmp_path / "data" / "split" / "train.parquet").write_text("x")
    a, b = run_folder(tmp_path, "tiger-seed0"), run_folder(tmp_path, "tiger-seed1")
    assert (a / "data" / "split" / "train.parquet").read_text() == "x" and a != b
    assert run_folder(tmp_path, "tiger-seed0") == a  # idempotent: the link is kept


@pytest.mark.parametrize("module", ["s2gr_core.stages", "s2gr_core.models.gr.train"])
def test_training_and_decoding_import_without_faiss(module: str) -> None:
    """A GPU machine may lack faiss: only fitting codebooks needs it."""
    import subprocess

    code = f"import sys; sys.modules['faiss'] = None; import {module}; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
