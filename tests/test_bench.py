"""The benchmark runner (bench/common.py, the Prefect flow of bench/grid.py): parallel workers, a time
budget, finishing stopped runs."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from common import Run, run_all, run_folder, worker_result

REPO = Path(__file__).resolve().parents[1]

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


@pytest.fixture(scope="module", autouse=True)
def prefect_server(prefect_harness):
    """The session's temporary Prefect server (conftest), for this module's flows."""


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


@pytest.mark.parametrize("module", ["s2gr_core.stages.generative", "s2gr_core.models.gr.train"])
def test_training_and_decoding_import_without_faiss(module: str) -> None:
    """A GPU machine may lack faiss: only fitting codebooks needs it."""
    import subprocess

    code = f"import sys; sys.modules['faiss'] = None; import {module}; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


@pytest.mark.parametrize("buckets", [False, True])
def test_throughput_rows_time_the_trainer_and_count_the_flops_it_ran(buckets: bool, params, sid_root: Path) -> None:
    """bench/gr_throughput.py on a tiny TIGER: rates, FLOPs (executed vs useful), peak memory."""
    import argparse
    import dataclasses

    import gr_throughput as bench
    import numpy as np
    import torch

    from s2gr_core.models.gr.train import GRTrainer
    from s2gr_core.models.runtime import Runtime
    from s2gr_core.split import load_eval, load_train
    from s2gr_core.stages.generative import load_semantic

    sem = load_semantic(sid_root / "data" / "sids", 40)
    users, sequences = load_train(str(sid_root / "data" / "split" / "train.parquet"))
    valid_users, histories, _ = load_eval(str(sid_root / "data" / "split" / "valid.parquet"))
    small = {"batch_size": 16, "encoder_layers": 1, "decoder_layers": 1, "length_buckets": buckets}
    cfg = dataclasses.replace(params.tiger, threads=1, merge_codes=False, **small)
    trainer = GRTrainer(cfg, "tiger", sem, users, sequences, 20, Runtime(torch.device("cpu"), "fp32", False, 1, ""))
    decode = bench.gr_decoder(trainer, sem, valid_users, histories, buckets)
    args = argparse.Namespace(seed=0, batches=3, decode_batch=8, flop_stride=2, peak_gflops=100.0, repeats=1)
    row = bench.measure(bench.Bench(trainer, decode), args, np.array([len(h) for h in histories]))
    assert row["train_samples_per_s"] > 0 and row["decode_users_per_s"] > 0
    assert row["train_peak_memory_mb"] > 0 and row["decode_gflop_per_user"] > 0
    assert row["train_fraction_of_peak"] == pytest.approx(row["train_gflops"] / 100.0)
    # one thread: CPU time is real and cannot much exceed the wall time it ran in
    for part, rate in (("train", "train_samples_per"), ("decode", "decode_users_per")):
        assert 0 < row[f"{part}_cpu_seconds"] < 1.5 * row[f"{part}_seconds"] + 0.05
        work = row[f"{rate}_s"] * row[f"{part}_seconds"]
        assert row[f"{rate}_cpu_s"] == pytest.approx(work / row[f"{part}_cpu_seconds"])
        assert isinstance(row[f"{part}_minor_faults"], int) and row[f"{part}_minor_faults"] >= 0
    if buckets:  # cropped batches: every executed FLOP is useful
        assert row["train_useful_gflops"] == pytest.approx(row["train_gflops"])
    else:  # full windows: the padding's FLOPs are executed but not useful
        assert row["train_useful_gflops"] < row["train_gflops"]
    table = bench.markdown(
        {
            "rows": [{**row, "mode": m, "merge_codes": False, "config": "eager-fp32"} for m in ("tiger", "s2gr")],
            "sids": None,
            **{"dataset": "fixture", "device": "cpu", "threads": 1, "batch_size": 16, "batches": 3},
            **{"users": len(histories), "beam": 20, "decode_batch": 8, "peak_gflops": 100.0},
            **{"gr_config": "bench/configs/gr-ml-100k.yaml", "model": {"d_model": 64}},
        }
    )
    assert "| tiger | per code | eager-fp32 |" in table
    assert "| eager-fp32 | per code | 1.00 | 1.00 | 1.00 | 1.00 |" in table  # S2GR/TIGER, wall and CPU
    assert "GR model of gr-ml-100k.yaml {'d_model': 64}" in table


def test_throughput_rounds_interleave_the_rows_and_report_the_median(params, sid_root: Path, monkeypatch) -> None:
    """--repeats: every row is timed in turn (A B A B …); a row is its median round, its rounds listed."""
    import argparse

    import gr_throughput as bench
    import numpy as np

    order: list[str] = []
    rates = {"a": iter([10.0, 30.0, 20.0]), "b": iter([5.0, 5.0, 8.0])}

    def fake_round(b, args, lengths):
        order.append(b.trainer)
        rate = next(rates[b.trainer])
        keys = ("train_samples_per_s", "decode_users_per_s", "train_samples_per_cpu_s", "decode_users_per_cpu_s")
        timing = {"train_peak_memory_mb": rate, "decode_peak_memory_mb": 1.0, "train_samples": 40.0}
        timing.update({"train_loss": 1.0, "train_minor_faults": 0.0, "decode_minor_faults": 0.0})
        return {**dict.fromkeys(keys, rate), **timing}

    monkeypatch.setattr(bench, "warm_up", lambda *a: None)
    monkeypatch.setattr(bench, "timed_round", fake_round)
    flops = {"executed": 4e9, "useful": 2e9, "samples": 40, "decode": 1e9}
    monkeypatch.setattr(bench, "counted", lambda *a: flops)
    args = argparse.Namespace(repeats=3, peak_gflops=100.0)

    class Named(bench.Bench):  # a bench whose trainer is only a name: nothing to count
        parameters = 0

    a, b = bench.measure_all([Named("a", None), Named("b", None)], args, np.ones(10))
    assert order == ["a", "b"] * 3
    assert a["train_samples_per_s"] == 20.0 and a["train_samples_per_s_runs"] == [10.0, 30.0, 20.0]
    assert a["train_peak_memory_mb"] == 30.0  # the highest peak, not the median
    assert a["train_gflops"] == pytest.approx(4.0 / (40 / 20.0)) and a["decode_gflop_per_user"] == pytest.approx(0.1)
    # S2GR/TIGER time, paired round by round: 5/10, 5/30, 8/20 -> TIGER-over-S2GR 2.0, 6.0, 2.5
    assert bench.paired_ratio(a, b, "decode_users_per_s") == "2.50 (2.00-6.00)"
    assert bench.paired_ratio({"r": 10.0}, {"r": 8.0}, "r") == "1.25"  # one round: no range


def test_contention_table_compares_each_process_with_its_policy_and_the_fastest_alone() -> None:
    import contention

    rows = [
        {"policy": "default", "scenario": "alone", "threads": 2, "ms_per_step": [100.0]},
        {"policy": "default", "scenario": "two trainings", "threads": 2, "ms_per_step": [400.0, 500.0]},
        {"policy": "PASSIVE", "scenario": "alone", "threads": 2, "ms_per_step": [150.0]},
        {"policy": "PASSIVE", "scenario": "busy neighbour", "threads": 2, "ms_per_step": [180.0]},
    ]
    table = contention.markdown({"dataset": "ml-100k", "device": "cpu", "steps": 4, "batch_size": 8, "rows": rows})
    assert "| default | two trainings | 2 | 400 / 500 | 4.0 / 5.0 | 4.0 / 5.0 |" in table
    assert "| PASSIVE | busy neighbour | 2 | 180 | 1.2 | 1.8 |" in table


def test_validation_table_ranks_by_sid_nll_and_shows_what_was_not_measured() -> None:
    import gr

    run = {"seed": 0, "best_epoch": 19, "epochs_run": 20, "seconds_per_epoch": 60.04, "device": "cpu (2 cores)"}
    rows = [
        {**run, "variant": "weak", "valid": {"sid_nll": 9.9, "ce_s1": 4.5, "cluster_acc_l1": 0.3}},
        {**run, "variant": "strong", "valid": {"sid_nll": 9.6, "ndcg_at_10": 0.044}},
    ]
    table = gr.validation_markdown("amazon-beauty", rows)
    assert "the test split was not read" in table
    strong, weak = (table.index(f"| {name} | 0 |") for name in ("strong", "weak"))
    assert strong < weak  # lowest NLL first
    assert "| strong | 0 | 9.6000 | — | — | — | 0.0440 | — | — | — | — | 19/20 | 60.0 |" in table


def test_a_run_is_reused_only_when_its_finished_training_has_the_same_config(params, tmp_path: Path) -> None:
    from dataclasses import asdict, replace

    import gr

    from s2gr_core.io import save_torch

    cfg = params.s2gr
    assert not gr.trained_as_configured(tmp_path, "s2gr", cfg)  # nothing trained
    (tmp_path / "models" / "s2gr").mkdir(parents=True)
    save_torch({"model": {}, "config": asdict(cfg)}, tmp_path / "models" / "s2gr" / "best.pt")
    assert not gr.trained_as_configured(tmp_path, "s2gr", cfg)  # a running best, the stage never ended
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "train_s2gr.json").write_text("{}")
    assert gr.trained_as_configured(tmp_path, "s2gr", cfg)
    assert not gr.trained_as_configured(tmp_path, "s2gr", replace(cfg, align_weight=cfg.align_weight + 0.1))
    assert not gr.trained_as_configured(tmp_path, "tiger", cfg)


@pytest.mark.parametrize("path", sorted((REPO / "bench" / "configs").glob("gr-*.yaml")), ids=lambda p: p.stem)
def test_every_variant_of_a_frozen_gr_config_is_a_valid_params_section(path: Path) -> None:
    """Each variant laid over params.yaml as bench/gr.py lays it passes the params checks, so a typo or a
    bad value fails here, not hours into a grid."""
    import yaml

    from s2gr_core.config import params_from_dict

    config = yaml.safe_load(path.read_text())
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    for name, variant in config["variants"].items():
        fields = dict(variant)
        mode = fields.pop("mode")
        assert mode in ("tiger", "s2gr"), f"{path.name}: variant {name} has mode {mode!r}"
        sections = {**config["semantic"], mode: {**config["model"], **fields, "seed": 0}}
        built = params_from_dict({**raw, **{k: {**raw[k], **v} for k, v in sections.items()}})
        assert getattr(built, mode).seed == 0
