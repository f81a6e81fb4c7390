"""Speed switches: exact length bucketing, bf16 autocast, compiled steps with eager fallback, device-side losses."""

from __future__ import annotations

import dataclasses
import mmap
import os
import platform
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from s2gr_core.allocator import USER_KEYS, malloc_policy
from s2gr_core.config import ConfigError, Params, params_from_dict
from s2gr_core.models.common import peak_memory_mb, reset_peak_memory
from s2gr_core.models.gr.data import left_padded, sid_tensor
from s2gr_core.models.gr.model import SeqToSID
from s2gr_core.models.gr.train import GRTrainer, build_spec, predict
from s2gr_core.models.runtime import CompiledStep, LossSums, Runtime, cpu_bf16, effective_precision, run_guarded
from s2gr_core.models.sasrec import SASRec
from s2gr_core.models.sasrec.train import SASRecTrainer
from s2gr_core.models.sasrec.train import predict as sasrec_predict
from s2gr_core.split import load_eval, load_train
from s2gr_core.stages.generative import load_semantic
from tests.conftest import repo_params
from tests.test_sasrec import TINY as SASREC_TINY
from tests.test_sasrec import cyclic_data

CPU = torch.device("cpu")


def runtime(precision: str = "fp32", compile: bool = False) -> Runtime:
    return Runtime(CPU, precision, compile, 1, precision)  # type: ignore[arg-type]


def semantic_model(sid_root: Path, params: Params, mode: str, **changes) -> tuple:
    sem = load_semantic(sid_root / "data" / "sids", 40)
    cfg = dataclasses.replace(getattr(params, mode), dropout=0.0, **changes)
    torch.manual_seed(0)
    model = SeqToSID(build_spec(cfg, mode, sem, 20)).double().eval()  # float64: crops differ only in rounding
    return sem, model


@pytest.mark.parametrize("mode", ["tiger", "s2gr"])
@pytest.mark.parametrize("merge", [False, True])
@pytest.mark.parametrize("user_buckets", [0, 5])
def test_a_cropped_batch_computes_what_the_padded_one_does(
    mode: str, merge: bool, user_buckets: int, params: Params, sid_root: Path
) -> None:
    sem, model = semantic_model(sid_root, params, mode, merge_codes=merge, user_buckets=user_buckets)
    _, histories, _ = load_eval(str(sid_root / "data" / "split" / "valid.parquet"))
    padded = left_padded(histories[:8], 20)
    width = int((padded >= 0).sum(axis=1).max())
    assert width < 20  # the fixture's histories leave padding to crop
    full, cropped = sid_tensor(padded, sem.sids), sid_tensor(padded[:, 20 - width :], sem.sids)
    users = torch.arange(8) if user_buckets else None
    target = torch.as_tensor(sem.sids[:8])
    with torch.no_grad():
        mem_full, mask_full = model.encode(full, users)
        mem_crop, mask_crop = model.encode(cropped, users)
        cut = mem_full.shape[1] - mem_crop.shape[1]  # leading padding tokens the crop removed
        lead = 1 if user_buckets else 0  # the user token stays first, at position 0, whatever the crop
        aligned = torch.cat([mem_full[:, :lead], mem_full[:, lead + cut :]], dim=1)
        real = mask_crop[:, 0, 0]
        assert cut > 0 and real[:, :lead].all()
        torch.testing.assert_close(mem_crop[real], aligned[real])
        logits_full, _ = model.teacher_forced(mem_full, mask_full, target)
        logits_crop, _ = model.teacher_forced(mem_crop, mask_crop, target)
    for a, b in zip(logits_full, logits_crop, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("mode", ["tiger", "s2gr"])
def test_bucketed_decoding_returns_the_lists_of_padded_decoding_in_user_order(
    mode: str, params: Params, sid_root: Path
) -> None:
    sem, model = semantic_model(sid_root, params, mode)
    users, histories, _ = load_eval(str(sid_root / "data" / "split" / "test.parquet"))
    histories = [histories[i][-n:] for i, n in enumerate(np.resize([1, 7, 3, 20, 2], len(histories)))]
    common = (model, histories, users, sem, 20, 10, 3, CPU)  # chunks of 3 users: several crops
    items_b, scores_b = predict(*common, runtime(), length_buckets=True)
    items_p, scores_p = predict(*common, runtime(), length_buckets=False)
    np.testing.assert_array_equal(items_b, items_p)
    np.testing.assert_allclose(scores_b, scores_p, rtol=1e-6)


def test_bucketed_sasrec_lists_equal_padded_ones(tmp_path: Path) -> None:
    _, _, test = cyclic_data(40, n_items=30)
    histories = [h[-n:] for h, n in zip(test[0], np.resize([1, 5, 8, 2], len(test[0])), strict=True)]
    torch.manual_seed(0)
    model = SASRec(30, 8, dataclasses.replace(SASREC_TINY, positions="from_end")).double()
    a = sasrec_predict(model, histories, 5, False, 7, CPU, runtime(), length_buckets=True)
    b = sasrec_predict(model, histories, 5, False, 7, CPU, runtime(), length_buckets=False)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_allclose(a[1], b[1], rtol=1e-6)


def test_training_batches_are_cropped_and_cover_every_example(params: Params, sid_root: Path) -> None:
    sem = load_semantic(sid_root / "data" / "sids", 40)
    users, sequences = load_train(str(sid_root / "data" / "split" / "train.parquet"))
    cfg = dataclasses.replace(params.tiger, batch_size=8, threads=1)
    trainer = GRTrainer(cfg, "tiger", sem, users, sequences, 20, runtime())
    batches = trainer.batches(np.random.default_rng(0))
    assert sorted(np.concatenate(batches).tolist()) == list(range(trainer.examples))
    spread = np.mean([np.ptp(trainer.lengths[b]) for b in batches])
    assert spread < np.ptp(trainer.lengths)  # a batch holds similar lengths
    result = trainer.epoch(1, np.random.default_rng(0), max_batches=3, progress=False)
    assert result.samples == sum(len(b) for b in trainer.batches(np.random.default_rng(0))[:3])
    assert np.isfinite(result.losses["loss"])


def test_loss_sums_stay_on_the_device_until_read() -> None:
    sums = LossSums()
    sums.add({"loss": torch.tensor(2.0), "rec": torch.tensor(1.0)}, 3)
    sums.add({"loss": torch.tensor(4.0), "rec": torch.tensor(1.0)}, 1)
    assert isinstance(sums.sums["loss"], torch.Tensor)
    assert sums.means() == {"loss": pytest.approx(2.5), "rec": pytest.approx(1.0)} and sums.count == 4


def test_cpu_bf16_is_read_from_the_cpu_flags(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor : 0\nflags : fpu avx2 avx512f avx512_bf16\n")
    assert cpu_bf16.__wrapped__(str(info)) == "AVX512-BF16"
    info.write_text("processor : 0\nflags : fpu avx2 amx_bf16 avx512_bf16\n")
    assert cpu_bf16.__wrapped__(str(info)) == "AMX-BF16"
    info.write_text("processor : 0\nflags : fpu avx2\n")
    assert cpu_bf16.__wrapped__(str(info)) is None
    assert cpu_bf16.__wrapped__(str(tmp_path / "missing")) is None


def test_bf16_falls_back_to_fp32_and_says_so_without_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("s2gr_core.models.runtime.cpu_bf16", lambda: None)
    chosen, note = effective_precision("bf16", CPU)
    assert chosen == "fp32" and "no native bf16" in note
    monkeypatch.setattr("s2gr_core.models.runtime.cpu_bf16", lambda: "AVX512-BF16")
    assert effective_precision("bf16", CPU) == ("bf16", "bf16 autocast, native on this CPU (AVX512-BF16)")
    assert effective_precision("fp32", CPU)[0] == "fp32"


@pytest.mark.parametrize("mode", ["tiger", "s2gr"])
def test_bf16_training_and_decoding_run_and_keep_fp32_scores(mode: str, params: Params, sid_root: Path) -> None:
    sem = load_semantic(sid_root / "data" / "sids", 40)
    users, sequences = load_train(str(sid_root / "data" / "split" / "train.parquet"))
    cfg = dataclasses.replace(getattr(params, mode), batch_size=16, threads=1, precision="bf16")
    trainer = GRTrainer(cfg, mode, sem, users, sequences, 20, runtime("bf16"))
    result = trainer.epoch(1, np.random.default_rng(0), max_batches=2, progress=False)
    assert np.isfinite(result.losses["loss"])
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # autocast: weights stay fp32
    test_users, histories, _ = load_eval(str(sid_root / "data" / "split" / "test.parquet"))
    items, scores = predict(trainer.model, histories, test_users, sem, 20, 10, 64, CPU, runtime("bf16"))
    fp32_items, _ = predict(trainer.model, histories, test_users, sem, 20, 10, 64, CPU, runtime("fp32"))
    assert scores.dtype == np.float32 and (np.diff(scores, axis=1) <= 0).all()
    assert np.mean(items[:, 0] == fp32_items[:, 0]) >= 0.5  # bf16 rounding reorders some near-ties only


def test_a_failing_compilation_warns_once_and_runs_eagerly(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler found\nmore detail")

    monkeypatch.setattr(torch, "compile", lambda fn, **kw: broken)
    calls = []
    step = CompiledStep(lambda x: calls.append(x) or x * 2, "toy step", CPU)
    with pytest.warns(UserWarning, match=r"toy step: torch.compile failed \(RuntimeError: no C\+\+ compiler found\)"):
        assert run_guarded(step, lambda: step(torch.tensor(3.0))) == 6
    assert step.compiled is None and len(calls) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # eager from now on: no second warning
        assert run_guarded(step, lambda: step(torch.tensor(4.0))) == 8


def assert_compiled_step_matches_eager(compiled: GRTrainer | SASRecTrainer, eager: GRTrainer | SASRecTrainer) -> None:
    """One training step on the same first batch: compiled without falling back, same loss."""
    batch = eager.batches(np.random.default_rng(0))[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fallback to eager would warn: fail instead
        loss_c = compiled.step(batch)["loss"]
    loss_e = eager.step(batch)["loss"]
    assert compiled.compiled is not None and compiled.compiled.failure is None
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-4, atol=1e-5)


def test_compiled_training_and_decoding_match_eager_on_cpu(params: Params, sid_root: Path) -> None:
    """The path a GPU takes with CUDA graphs, compiled here with the CPU backend."""
    sem = load_semantic(sid_root / "data" / "sids", 40)
    users, sequences = load_train(str(sid_root / "data" / "split" / "train.parquet"))
    cfg = dataclasses.replace(params.tiger, batch_size=64, threads=1, dropout=0.0, encoder_layers=1)
    eager = GRTrainer(cfg, "tiger", sem, users, sequences, 20, runtime())
    compiled = GRTrainer(
        dataclasses.replace(cfg, compile=True), "tiger", sem, users, sequences, 20, runtime(compile=True)
    )
    assert_compiled_step_matches_eager(compiled, eager)
    for a, b in zip(compiled.model.parameters(), eager.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    test_users, histories, _ = load_eval(str(sid_root / "data" / "split" / "test.parquet"))
    items_c, _ = predict(compiled.model, histories, test_users, sem, 20, 10, 64, CPU, runtime(compile=True))
    items_e, _ = predict(eager.model, histories, test_users, sem, 20, 10, 64, CPU, runtime())
    assert np.mean(items_c == items_e) > 0.9


def test_compiled_sasrec_training_matches_eager_on_cpu() -> None:
    train, _, _ = cyclic_data(40, n_items=12, length=10)
    cfg = dataclasses.replace(SASREC_TINY, batch_size=16, dropout=0.0)
    eager = SASRecTrainer(cfg, train, 12, 8, runtime())
    compiled = SASRecTrainer(dataclasses.replace(cfg, compile=True), train, 12, 8, runtime(compile=True))
    assert_compiled_step_matches_eager(compiled, eager)


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("tiger", "precision", "fp16", r"tiger\.precision: must be one of \['fp32', 'bf16'\], got 'fp16'"),
        ("sasrec", "compile", "yes", r"sasrec\.compile"),
        ("s2gr", "length_buckets", 1.5, r"s2gr\.length_buckets"),
    ],
)
def test_speed_switches_are_validated(section: str, key: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        params_from_dict(repo_params(**{section: {key: value}}))


def _import_s2gr_core(code: str, **env: str) -> subprocess.CompletedProcess:
    chosen = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "S2GR_MALLOC", *USER_KEYS)
    clean = {k: v for k, v in os.environ.items() if k not in chosen}
    return subprocess.run(
        [sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True, check=True, timeout=120
    )


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "GOMP_SPINCOUNT=3000"),
        ({"OMP_WAIT_POLICY": "PASSIVE"}, "OMP_WAIT_POLICY=PASSIVE"),
        ({"GOMP_SPINCOUNT": "INFINITY"}, "GOMP_SPINCOUNT=INFINITY"),
    ],
)
def test_importing_the_library_bounds_openmp_spinning_unless_the_user_chose(env: dict, expected: str) -> None:
    code = "import s2gr_core; from s2gr_core.models.runtime import wait_policy; print(wait_policy())"
    done = _import_s2gr_core(code, **env)
    assert done.stdout.strip() == expected
    assert "warn" not in done.stderr.lower()


def test_torch_loaded_before_the_library_is_reported() -> None:
    done = _import_s2gr_core("import torch, s2gr_core")
    assert "torch was imported before s2gr_core" in done.stderr


# One 64 MiB tensor, allocated and freed, and where glibc put it (mallinfo2, glibc >= 2.33):
# hblkhd counts bytes in blocks mapped apart from the heap, fordblks the heap's free bytes.
HEAP_PROBE = """
import ctypes
import s2gr_core, torch
from s2gr_core.allocator import malloc_policy
class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
mallinfo2.restype = Info
block = torch.ones(64 * 2**20, dtype=torch.uint8)
mapped = mallinfo2().hblkhd >= 64 * 2**20
del block
kept = mallinfo2().fordblks >= 64 * 2**20
print(malloc_policy(), mapped, kept, sep="|")
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the malloc policy is glibc's")
@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "mmap and trim thresholds 1 GiB|False|True"),  # in the heap, and kept when freed
        ({"S2GR_MALLOC": "default"}, "glibc default (S2GR_MALLOC=default)|True|False"),  # mapped apart
        ({"MALLOC_MMAP_THRESHOLD_": "4096"}, "MALLOC_MMAP_THRESHOLD_=4096|True|False"),
    ],
)
def test_importing_the_library_keeps_freed_memory_for_reuse_unless_the_user_chose(env: dict, expected: str) -> None:
    assert _import_s2gr_core(HEAP_PROBE, **env).stdout.strip() == expected


def test_the_runtime_reports_the_malloc_policy() -> None:
    assert runtime().tags()["malloc"] == malloc_policy() != "system default (not applied yet)"


def test_the_cpu_peak_memory_can_be_reset_between_measurements() -> None:
    reset_peak_memory(CPU)
    before = peak_memory_mb(CPU)
    # 50 MiB, touched, mapped apart from malloc's heap: returned to the kernel on close (freed heap
    # memory stays resident by design, see s2gr_core.allocator)
    block = mmap.mmap(-1, 50 * 2**20)
    block.write(b"x" * len(block))
    grown = peak_memory_mb(CPU)
    block.close()
    reset_peak_memory(CPU)
    assert grown - before > 40
    assert peak_memory_mb(CPU) < grown - 40
