"""How many cores a process may use (s2gr_core/cores.py): the pipeline flow's share for stages it runs
side by side, else the process's CPU affinity; torch's threads and DDP's per-rank share follow it."""

from __future__ import annotations

import os

import pytest
import torch

from s2gr_core.cores import CORES_VARIABLE, available_cores
from s2gr_core.models.common import set_threads
from s2gr_core.models.distributed import core_share
from tasks.dvc import stage_env


@pytest.fixture
def keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("cores", [1, 3, 8])
def test_s2gr_cores_is_what_a_process_may_use(cores: int, monkeypatch: pytest.MonkeyPatch, keep_threads) -> None:
    monkeypatch.setenv(CORES_VARIABLE, str(cores))
    assert available_cores() == cores
    assert core_share(2) == max(1, cores // 2)  # each of two DDP ranks
    assert set_threads(0) == cores == torch.get_num_threads()  # `threads: 0` in params.yaml
    assert set_threads(2) == 2  # an explicit setting wins


@pytest.mark.parametrize("bad", ["0", "-1", "two", "1.5", " "])
def test_a_bad_s2gr_cores_is_named(bad: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CORES_VARIABLE, bad)
    with pytest.raises(ValueError, match=r"S2GR_CORES=.*must be a whole number of cores >= 1"):
        available_cores()


def test_without_s2gr_cores_the_affinity_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CORES_VARIABLE, raising=False)
    assert available_cores() == len(os.sched_getaffinity(0))


def test_a_stage_of_the_flow_gets_its_share_only_when_it_shares(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CORES_VARIABLE, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    alone = stage_env("run-id")
    assert CORES_VARIABLE not in alone and "OMP_NUM_THREADS" not in alone  # as under `dvc repro`
    assert alone["S2GR_MLFLOW_PARENT_RUN_ID"] == "run-id"
    shared = stage_env(None, cores=1)
    assert shared[CORES_VARIABLE] == shared["OMP_NUM_THREADS"] == "1"
    assert "S2GR_MLFLOW_PARENT_RUN_ID" not in shared
