"""The DVC-experiment sweep (bench/sweep.py): the queued commands, and the table read back from `dvc exp show`."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from sweep import COLUMNS, experiments, markdown, queue_commands, set_value

from s2gr_core.config import GR_MODES, shared_keys

REPO = Path(__file__).resolve().parents[1]


def test_values_are_written_as_dvc_set_param_parses_them() -> None:
    assert [set_value(v) for v in (True, False, 0.1, 3, "input_codes", [1.0, 0.5], [])] == [
        "true", "false", "0.1", "3", "input_codes", "[1.0, 0.5]", "[]",
    ]  # fmt: skip


def test_each_variant_is_one_queued_experiment_with_the_common_overrides_first() -> None:
    spec = {
        "stage": "train_s2gr",
        "common": {"s2gr.threads": 1},
        "variants": {"base": {}, "sum": {"s2gr.rec_reduction": "sum", "s2gr.threads": 2}},
    }
    commands = queue_commands("demo", spec, None)
    assert [c[3:] for c in commands] == [
        ["exp", "run", "--queue", "-n", "demo-base", "-S", "++s2gr.threads=1", "train_s2gr"],
        [
            "exp",
            "run",
            "--queue",
            "-n",
            "demo-sum",
            "-S",
            "++s2gr.threads=2",
            "-S",
            "++s2gr.rec_reduction=sum",
            "train_s2gr",
        ],
    ]
    assert len(queue_commands("demo", spec, ["sum"])) == 1
    with pytest.raises(SystemExit, match=r"--only: no variant\(s\) \['summ'\]"):
        queue_commands("demo", spec, ["summ"])


def test_the_repository_sweeps_name_real_parameters() -> None:
    """Every override in bench/sweeps/ is a key params.yaml has (a typo would fail only in the queue)."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for path in (REPO / "bench" / "sweeps").glob("*.yaml"):
        spec = yaml.safe_load(path.read_text())
        for overrides in [spec.get("common") or {}, *(v or {} for v in spec["variants"].values())]:
            for key in overrides:
                section, name = key.split(".")
                # tiger:/s2gr: may also override any shared gr: key (the loader lays them over gr)
                known = set(params[section]) | (set(shared_keys()) if section in GR_MODES else set())
                assert name in known, f"{path.name}: {key}"


def test_a_set_written_with_plus_plus_adds_a_model_override_the_way_dvc_applies_it(tmp_path: Path) -> None:
    """`dvc exp run -S` goes through DVC's Hydra overrides: a plain key=value must already exist in the file."""
    from dvc.utils.hydra import apply_overrides

    from s2gr_core.config import load_params

    file = tmp_path / "params.yaml"
    file.write_text((REPO / "params.yaml").read_text())
    apply_overrides(file, ["++s2gr.threads=1", "++gr.lr=0.003"])
    params = load_params(file)
    assert (params.s2gr.threads, params.tiger.threads) == (1, 0)
    assert params.tiger.lr == params.s2gr.lr == 0.003


def test_only_finished_experiments_report_their_own_metrics() -> None:
    def exp(name: str, state: str | None, nll: float) -> dict:
        data = {"metrics": {"m.json": {"data": {"best_valid_sid_nll": nll}}}}
        return {"name": name, "executor": {"state": state} if state else None, "revs": [{"name": name, "data": data}]}

    shown = [
        {"rev": "workspace", "name": None, "data": {}, "experiments": None},
        {"rev": "abc", "experiments": [exp("s-a", "success", 6.5), exp("s-b", "queued", 7.0), exp("s-c", None, 6.0)]},
    ]
    found = experiments(shown)
    assert {k: v[0] for k, v in found.items()} == {"s-a": "success", "s-b": "queued", "s-c": "success"}
    row = {"variant": "a", "state": "success", **dict.fromkeys(COLUMNS), "best_valid_sid_nll": 6.5}
    table = markdown([row], {"variants": {"a": {"s2gr.tau": 0.2}}})
    assert "| a | tau=0.2 | success | 6.5000 | — |" in table
