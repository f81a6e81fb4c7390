from __future__ import annotations

import subprocess
import sys

import pytest

from s2gr.cli import main
from tests.conftest import BIN, REPO


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
