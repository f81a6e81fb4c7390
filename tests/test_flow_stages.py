"""The pipeline flow's stage scheduler (flows/pipeline.py ``run_stages``) on real Prefect tasks: stages
start once what they need completed, at most ``jobs`` at a time, longer chains first, and nothing
runs after a failure that it needs."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from prefect import flow, task

from flows.pipeline import MODEL_TABLE, PROMOTION, ancestors, run_stages, summary

# b needs a; d needs b and c; e needs d; x needs nothing
DAG = {"a": [], "b": ["a"], "c": [], "d": ["b", "c"], "e": ["d"], "x": []}


@pytest.fixture(scope="module", autouse=True)
def prefect_server(prefect_harness):
    """The session's temporary Prefect server (conftest), for this module's flows."""


def schedule(jobs: int, failing: set[str]) -> tuple[dict, list[str], int]:
    """Runs DAG's stages as tasks that sleep a little; returns (outcome, start order, most at once)."""
    lock, started, busy = threading.Lock(), [], [0, 0]  # busy: now, most

    @task(name="stage")
    def stage(name: str) -> str:
        with lock:
            started.append(name)
            busy[0] += 1
            busy[1] = max(busy)
        time.sleep(0.3)
        with lock:
            busy[0] -= 1
        if name in failing:
            raise RuntimeError(f"{name} failed")
        return name

    @flow
    def scheduled() -> dict:
        futures = run_stages(DAG, jobs, stage.submit)
        return {k: None if f is None else f.state.type.value for k, f in futures.items()}

    return scheduled(), started, busy[1]


def test_stages_run_side_by_side_longer_chains_first() -> None:
    outcome, started, most = schedule(jobs=2, failing=set())
    assert set(outcome.values()) == {"COMPLETED"} and list(outcome) == list(DAG)
    assert most == 2
    assert set(started[:2]) == {"a", "c"}  # a leads to b, d, e and c to d, e; x (ready too) to nothing
    assert started.index("d") > max(started.index("b"), started.index("c"))
    assert started.index("e") > started.index("d")


def test_one_job_runs_one_stage_at_a_time() -> None:
    _, started, most = schedule(jobs=1, failing=set())
    assert most == 1 and sorted(started) == sorted(DAG)
    assert started == ["a", "b", "c", "d", "e", "x"]


def test_what_needs_a_failed_stage_never_starts_and_the_rest_goes_on() -> None:
    outcome, started, _ = schedule(jobs=2, failing={"b"})
    assert outcome == {"a": "COMPLETED", "b": "FAILED", "c": "COMPLETED", "d": None, "e": None, "x": "COMPLETED"}
    assert "d" not in started and "e" not in started


def test_ancestors_are_everything_a_stage_needs() -> None:
    assert ancestors(DAG, "e") == {"a", "b", "c", "d"}
    assert ancestors(DAG, "a") == set()


def test_the_flow_runs_summary_has_the_stages_the_model_table_and_the_promotion(tmp_path: Path) -> None:
    outcome = {"split": {"stage": "split", "status": "ran", "seconds": 1.5}}
    (tmp_path / "reports").mkdir()
    (tmp_path / MODEL_TABLE).write_text("# Test metrics on ml-100k\n\n| model | N@10 |\n|---|---|\n| s2gr | 0.0405 |\n")
    text = summary("ml-100k", "abc", 2, outcome, tmp_path)
    assert "| split | ran | 1.5 |" in text and "| s2gr | 0.0405 |" in text
    assert f"No promotion decision yet: {PROMOTION} does not exist." in text
    failed = summary("ml-100k", "abc", 2, outcome, None)
    assert "the run failed" in failed and "0.0405" not in failed
