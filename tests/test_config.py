"""params.yaml validation: every error names the offending key."""

from __future__ import annotations

from pathlib import Path

import pytest

from s2gr_core.config import ConfigError, describe, load_params, params_from_dict
from tests.conftest import REPO, repo_params


def test_repo_params_load() -> None:
    params = load_params(REPO / "params.yaml")
    assert params.data.name == "ml-100k"
    assert params.split.max_history == 20


def test_every_parameter_has_help() -> None:
    rows = describe()
    assert {k for k, _ in rows} >= {"data.name", "split.max_history", "validate.min_user_interactions"}
    assert all(text for _, text in rows)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"data": {"name": "netflix"}}, r"data.name: must be one of"),
        ({"data": {"nmae": "ml-100k"}}, r"unknown parameter\(s\): data.nmae"),
        ({"split": {"max_history": 0}}, r"split.max_history: must be >= 1"),
        ({"split": {"max_history": "20"}}, r"split.max_history: expected an integer"),
        ({"split": {"max_history": True}}, r"split.max_history: expected an integer"),
        ({"validate": {"min_user_interactions": 2}}, r"validate.min_user_interactions: must be >= 3"),
        ({"validate": {"empty_text": "ignore"}}, r"validate.empty_text: must be one of"),
        ({"validate": {"rating_range": [5, 1]}}, r"validate.rating_range: must be \[lowest, highest\], got \[5, 1\]"),
        ({"validate": {"rating_range": [1, 5, 10]}}, r"validate.rating_range: must be \[lowest, highest\]"),
        ({"validate": {"rating_range": ["a", 5]}}, r"validate.rating_range"),
        ({"orchestration": {"retries": -1}}, r"orchestration.retries: must be >= 0"),
        ({"orchestration": {"jobs": 0}}, r"orchestration.jobs: must be >= 1"),
        ({"tracking": {"experiment": " "}}, r"tracking.experiment: must be a non-empty name"),
    ],
)
def test_bad_values_are_named(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        params_from_dict(repo_params(**overrides))


def test_missing_key_and_section() -> None:
    raw = repo_params()
    del raw["split"]["max_history"]
    with pytest.raises(ConfigError, match=r"split.max_history: missing from params.yaml"):
        params_from_dict(raw)
    raw = repo_params()
    del raw["tracking"]
    with pytest.raises(ConfigError, match=r"tracking: missing from params.yaml"):
        params_from_dict(raw)


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="parameter file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("data: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)


def test_gr_is_shared_by_tiger_and_s2gr_and_each_may_override_it() -> None:
    raw = repo_params(gr={"lr": 0.005, "d_model": 32}, s2gr={"lr": 0.001})
    params = params_from_dict(raw)
    assert (params.tiger.lr, params.s2gr.lr) == (0.005, 0.001)  # S2GR's own key wins
    assert params.tiger.d_model == params.s2gr.d_model == 32
    assert (params.tiger.rec_reduction, params.s2gr.rec_reduction) == ("mean", "sum")
    assert params.tiger.seed == params.s2gr.seed == 42  # seeds stay per model
    # full sections without gr: (an older params.yaml, the bench's own files) still load to the same models
    full = {k: v for k, v in raw.items() if k != "gr"}
    full["tiger"], full["s2gr"] = {**raw["gr"], **raw["tiger"]}, {**raw["gr"], **raw["s2gr"]}
    assert params_from_dict(full).tiger == params.tiger and params_from_dict(full).s2gr == params.s2gr


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"gr": {"seed": 1}}, r"unknown parameter\(s\): gr.seed \(gr holds what tiger and s2gr share"),
        ({"gr": {"align_weight": 0.3}}, r"unknown parameter\(s\): gr.align_weight"),
        ({"gr": {"lr": "fast"}}, r"tiger.lr: expected a number"),
        ({"gr": {"beam": 5}}, r"tiger.beam: 5 is below inference.top_k"),
    ],
)
def test_bad_shared_values_are_named(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        params_from_dict(repo_params(**overrides))


def test_a_shared_section_that_is_not_a_mapping_is_named() -> None:
    raw = repo_params()
    raw["gr"] = [1, 2]
    with pytest.raises(ConfigError, match="gr: expected a mapping, got list"):
        params_from_dict(raw)


def test_params_lists_each_shared_key_once() -> None:
    keys = [k for k, _ in describe()]
    assert "gr.lr" in keys and "tiger.lr" not in keys and "s2gr.lr" not in keys
    assert {"tiger.seed", "s2gr.seed", "s2gr.align_weight"} <= set(keys)
