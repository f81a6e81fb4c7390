from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from s2gr.cli import main
from tests.conftest import BIN, REPO, project_env
from tests.test_servers import free_port


def test_help_lists_commands_and_stages(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["stage", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name in ("fetch", "ingest", "validate", "split", "Exit status"):
        assert name in out


def test_unknown_stage_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["stage", "nope"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err


def test_params_command_explains_every_parameter(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(REPO)
    assert main(["params"]) == 0
    out = capsys.readouterr().out
    assert "split.max_history = 20" in out and "TIGER" in out


def test_console_script_outside_a_project(tmp_path) -> None:
    proc = subprocess.run(
        [str(BIN / "s2gr"), "stage", "split"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PATH": f"{BIN}", "HOME": str(tmp_path)},
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "no s2gr project (params.yaml + dvc.yaml)" in proc.stderr


def test_cli_runs_as_module() -> None:
    proc = subprocess.run([sys.executable, "-m", "s2gr.cli", "--help"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and "dvc exp run -S data.name=amazon-beauty" in proc.stdout


def test_compare_command_on_per_user_files(
    tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(1)
    base = rng.random(300)
    for name, values in (("a", base), ("b", base + 0.02)):
        pd.DataFrame(
            {"user_id": range(300), "split": "test", "ndcg_at_10": values, "recall_at_10": (values > 0.5).astype(float)}
        ).to_parquet(tmp_path / f"{name}.parquet")
    monkeypatch.chdir(REPO)
    code = main(
        [
            "compare",
            str(tmp_path / "a.parquet"),
            str(tmp_path / "b.parquet"),
            "--metrics",
            "ndcg_at_10",
            "--boot",
            "300",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "ndcg_at_10" in out and "+0.0200" in out and "95% CI" in out
    assert main(["compare", str(tmp_path / "a.parquet"), "no-such-run"]) == 2
    assert "neither a per-user results file nor an MLflow run id" in capsys.readouterr().err


def test_a_tracking_server_that_is_down_fails_the_stage_fast_as_transient(project: Path) -> None:
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.time()
    proc = subprocess.run(
        [str(BIN / "s2gr"), "stage", "fetch"],
        cwd=project,
        env=project_env(project, MLFLOW_TRACKING_URI=uri),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 3, proc.stderr  # transient: the Prefect task retries exit 3, never exit 1
    assert time.time() - started < 30
    assert (
        f"[fetch] FAILED before it started: MLflow tracking ({uri}): MLflow tracking server {uri} is not answering"
        in proc.stderr
    )
    assert "Traceback" not in proc.stderr
    assert not (project / "data" / "raw").exists()


@pytest.mark.parametrize(
    ("exit_code", "retried"),
    [(1, False), (3, True), (None, True)],
    ids=["rejected-input", "transient", "dvc-itself"],
)
def test_prefect_retries_everything_but_rejected_input(exit_code: int | None, retried: bool) -> None:
    from tasks.dvc import StageError, _retry_unless_rejected

    class Failed:
        def result(self) -> None:
            raise StageError("split", exit_code, "tail", dvc_code=1)

    assert _retry_unless_rejected(None, None, Failed()) is retried


def test_params_command_names_a_bad_key_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "dvc.yaml").write_text((REPO / "dvc.yaml").read_text())
    text = (REPO / "params.yaml").read_text()
    assert "min_user_interactions: 5" in text
    (tmp_path / "params.yaml").write_text(text.replace("min_user_interactions: 5", "min_user_interactions: 1", 1))
    monkeypatch.chdir(tmp_path)
    assert main(["params"]) == 2
    assert "validate.min_user_interactions: must be >= 3 for leave-one-out, got 1" in capsys.readouterr().err


def test_a_tracking_loss_mid_stage_is_reported_once_and_the_stage_goes_on(capsys: pytest.CaptureFixture[str]) -> None:
    from s2gr.tracking import StageRun

    class DownAfterTwo:  # the tracking server answers two calls, then goes away
        calls = 0

        def log_batch(self, run_id: str, metrics: list) -> None:
            self.calls += 1
            if self.calls > 2:
                raise ConnectionError("Connection refused")

    run = StageRun.__new__(StageRun)  # the run exists already: only its curve logging is under test
    run.stage, run.run_id, run.curves_lost, run.mlf = "train_tiger", "r1", None, DownAfterTwo()
    for epoch in range(1, 6):
        run.log_metrics({"loss": 1.0 / epoch}, epoch)  # never raises
    assert run.curves_lost == 3 and run.mlf.calls == 3  # nothing more was sent after the failure
    err = capsys.readouterr().err
    assert err.count("warning: MLflow stopped answering at step 3 (ConnectionError: Connection refused)") == 1


def test_experiments_are_marked_as_model_development(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Created with MLflow's model-development kind; an experiment created before the tag gets it on next use."""
    from s2gr.tracking import EXPERIMENT_KIND, client, experiment_id

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    mlf = client(tmp_path)
    key, kind = EXPERIMENT_KIND
    new = experiment_id(mlf, "s2gr", tmp_path)
    assert mlf.get_experiment(new).tags[key] == kind == "custom_model_development"
    assert experiment_id(mlf, "s2gr", tmp_path) == new
    older = mlf.create_experiment("s2gr-bench")  # as an earlier version of the project left it
    assert key not in mlf.get_experiment(older).tags
    assert experiment_id(mlf, "s2gr-bench", tmp_path) == older
    assert mlf.get_experiment(older).tags[key] == kind


def test_a_pipeline_run_ends_naming_the_data_it_ran_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """end_run logs the given inputs on the parent run (a missing one skipped), then closes it."""
    from s2gr.tracking import client, dvc_digest, end_run, start_pipeline_run

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "data" / "staged").mkdir(parents=True)
    (tmp_path / "data" / "staged" / "interactions.parquet").write_bytes(b"PAR1 rows")
    run_id = start_pipeline_run(tmp_path, "s2gr", "ml-100k", trigger="test")
    staged = {"staged_interactions": "interactions.parquet", "staged_items": "items.parquet"}
    end_run(tmp_path, run_id, ok=True, inputs={k: tmp_path / "data" / "staged" / v for k, v in staged.items()})
    run = client(tmp_path).get_run(run_id)
    assert run.info.status == "FINISHED"
    (logged,) = run.inputs.dataset_inputs
    assert logged.dataset.name == "data/staged/interactions.parquet"
    assert logged.dataset.digest == dvc_digest(tmp_path / "data" / "staged" / "interactions.parquet")
    assert [(t.key, t.value) for t in logged.tags] == [("mlflow.data.context", "staged_interactions")]


def test_stage_inputs_are_logged_as_datasets_with_dvcs_own_hashes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The digest is the hash DVC would lock for the path (a file's md5; a folder's `.dir` listing hash)."""
    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db import HashFileDB
    from dvc_objects.fs.local import LocalFileSystem

    from s2gr.tracking import StageRun, dvc_digest

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("S2GR_MLFLOW_PARENT_RUN_ID", raising=False)
    (tmp_path / "data" / "sids" / "sub").mkdir(parents=True)
    (tmp_path / "data" / "train.parquet").write_bytes(b"PAR1 rows")
    (tmp_path / "data" / "sids" / "sids.parquet").write_bytes(b"codes")
    (tmp_path / "data" / "sids" / "sub" / "trie.npz").write_bytes(b"\x00\x01")
    fs = LocalFileSystem()
    odb = HashFileDB(fs, str(tmp_path / ".cache"))
    for rel in ("data/train.parquet", "data/sids"):
        _, _, obj = build(odb, str(tmp_path / rel), fs, "md5")
        assert dvc_digest(tmp_path / rel) == obj.hash_info.value
    assert dvc_digest(tmp_path / "data" / "sids").endswith(".dir")

    run = StageRun(tmp_path, "train_tiger", {}, "s2gr", "ml-100k")
    deps = {"train": tmp_path / "data/train.parquet", "sids": tmp_path / "data/sids", "gone": tmp_path / "nope"}
    run.log_inputs(deps)
    run.close(ok=True)
    logged = run.mlf.get_run(run.run_id).inputs.dataset_inputs
    by_name = {d.dataset.name: d for d in logged}
    assert set(by_name) == {"data/train.parquet", "data/sids"}  # a missing input is not invented
    assert by_name["data/sids"].dataset.digest == dvc_digest(tmp_path / "data" / "sids")
    assert [(t.key, t.value) for t in by_name["data/train.parquet"].tags] == [("mlflow.data.context", "train")]
