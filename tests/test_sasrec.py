"""SASRec: training windows, learning a toy pattern, resume after a hard kill, inference lists."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from s2gr_core.config import SASRecConfig
from s2gr_core.evaluation.metrics import mean_metrics, per_user_metrics, target_ranks
from s2gr_core.io import load_torch
from s2gr_core.models.common import length_bucketed_batches
from s2gr_core.models.sasrec import SASRec, train_sasrec
from s2gr_core.models.sasrec.data import IGNORE, training_windows
from s2gr_core.models.sasrec.train import predict
from s2gr_core.models.training import TIMINGS, scratch_checkpoints

TINY = SASRecConfig(
    hidden=32,
    blocks=1,
    heads=1,
    ffn_mult=2,
    dropout=0.0,
    lr=0.01,
    weight_decay=0.0,
    batch_size=64,
    max_epochs=30,
    patience=30,
    seed=0,
    device="cpu",
    threads=1,
    positions="from_end",
    precision="fp32",
    compile=False,
    length_buckets=True,
)


def cyclic_data(n_users: int, n_items: int = 10, length: int = 12, seed: int = 0):
    """Each user walks the cycle 0 -> 1 -> ... -> n_items-1 -> 0 from a random start."""
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, n_items, n_users)
    full = [(s + np.arange(length)) % n_items for s in starts]
    train = [f[:-2] for f in full]
    valid = ([f[:-2] for f in full], np.array([f[-2] for f in full]))
    test = ([f[:-1] for f in full], np.array([f[-1] for f in full]))
    return train, valid, test


def test_windows_count_every_target_once_with_enough_context() -> None:
    seq = np.arange(10, 17)  # a b c d e f g
    x, y = training_windows([seq], max_len=4)
    assert x.tolist() == [[11, 12, 13, 14], [13, 14, 15, 16]]  # tokens are ids + 1
    assert y.tolist() == [[11, 12, 13, 14], [IGNORE, IGNORE, 15, 16]]
    x, y = training_windows([np.arange(100), np.array([5, 6])], max_len=20)
    counted = y[y != IGNORE]
    assert sorted(counted.tolist()) == sorted([*range(1, 100), 6])  # each target exactly once
    for row_x, row_y in zip(x[1:-1], y[1:-1], strict=True):  # later windows of the long sequence
        assert row_x[0] > 1
        assert np.flatnonzero(row_y != IGNORE).min() >= 20 // 2 - 1  # context of >= max_len // 2 items


def test_length_buckets_cover_all_windows_once() -> None:
    x, _ = training_windows([np.arange(n) for n in range(2, 40)], max_len=8)
    batches = length_bucketed_batches((x != 0).sum(axis=1), 16, np.random.default_rng(0))
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(x)))
    lengths = (x != 0).sum(axis=1)
    spread = [lengths[b].max() - lengths[b].min() for b in batches]
    assert np.mean(spread) < lengths.max() - lengths.min()  # batches group similar lengths


def test_learns_a_deterministic_pattern(tmp_path: Path) -> None:
    train, valid, test = cyclic_data(60)
    out = train_sasrec(
        TINY,
        train,
        valid[0],
        valid[1],
        n_items=10,
        max_len=8,
        ckpt_dir=tmp_path,
        ks=(1, 10),
        inference_batch=64,
        progress=False,
    )
    items, _ = predict(out.model, test[0], top_k=5, exclude_history=False, batch_size=64, device=torch.device("cpu"))
    recall_1 = mean_metrics(per_user_metrics(target_ranks(items, test[1]), (1,)))["recall_at_1"]
    assert recall_1 > 0.9
    assert out.best_valid["recall_at_1"] > 0.9
    assert (tmp_path / "best.pt").is_file() and (tmp_path / "last.pt").is_file()


def test_a_separate_resume_dir_keeps_the_model_folder_to_the_published_best(tmp_path: Path) -> None:
    train, valid, _ = cyclic_data(30, n_items=30)
    models, scratch = tmp_path / "models", tmp_path / "checkpoints"
    run = replace(TINY, max_epochs=2)
    out = train_sasrec(run, train, valid[0], valid[1], 30, 8, models, (1,), 64, progress=False, resume_dir=scratch)
    assert sorted(p.name for p in models.iterdir()) == ["best.pt"]  # published once, at the end
    assert sorted(p.name for p in scratch.iterdir()) == ["best.pt", "last.pt"]
    assert (models / "best.pt").read_bytes() == (scratch / "best.pt").read_bytes()
    assert load_torch(models / "best.pt")["epoch"] == out.best_epoch
    assert set(TIMINGS) <= set(out.history[0])  # the history keeps them; publish writes them to metrics only


def test_an_old_resume_checkpoint_in_the_model_folder_moves_to_scratch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    models, scratch = tmp_path / "models" / "sasrec", tmp_path / "checkpoints" / "sasrec"
    models.mkdir(parents=True)
    (models / "last.pt").write_bytes(b"resume state")
    (models / "best.pt").write_bytes(b"running best")
    assert scratch_checkpoints(models, scratch) == scratch
    assert sorted(p.name for p in models.iterdir()) == ["best.pt"]
    assert (scratch / "last.pt").read_bytes() == b"resume state"
    assert (scratch / "best.pt").read_bytes() == b"running best"
    assert f"moved {models / 'last.pt'} to {scratch}" in capsys.readouterr().out
    assert scratch_checkpoints(models, scratch) == scratch  # nothing left to move: silent
    assert capsys.readouterr().out == ""


def test_predict_excludes_history_when_asked(tmp_path: Path) -> None:
    train, valid, test = cyclic_data(30, n_items=30)
    out = train_sasrec(
        replace(TINY, max_epochs=2), train, valid[0], valid[1], 30, 8, tmp_path, (1,), 64, progress=False
    )
    items, _ = predict(out.model, test[0], top_k=3, exclude_history=True, batch_size=64, device=torch.device("cpu"))
    for hist, row in zip(test[0], items, strict=True):
        assert not set(row.tolist()) & set(hist[-8:].tolist())
        assert len(set(row.tolist())) == 3


RESUME_SCRIPT = """
import sys, numpy as np
from pathlib import Path
from dataclasses import replace
sys.path.insert(0, {repo!r})
from tests.test_sasrec import TINY, cyclic_data
from s2gr_core.models.sasrec import SASRec, train_sasrec
train, valid, _ = cyclic_data(3000, n_items=50, length=30)
train_sasrec(replace(TINY, max_epochs=40, patience=40), train, valid[0], valid[1], 50, 8, Path({ckpt!r}),
             (10,), 512, progress=False)
"""


def test_resume_after_a_hard_kill(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = tmp_path / "ckpt"
    script = RESUME_SCRIPT.format(repo=str(Path(__file__).resolve().parents[1]), ckpt=str(ckpt))
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    deadline = time.time() + 180
    killed_after = None
    while time.time() < deadline and proc.poll() is None:
        if (ckpt / "last.pt").is_file():
            epoch = load_torch(ckpt / "last.pt")["epoch"]
            if epoch >= 2:
                os.killpg(proc.pid, signal.SIGKILL)  # mid-training, no chance to clean up
                killed_after = epoch
                break
        time.sleep(0.05)
    proc.wait()
    assert killed_after is not None, f"training never reached epoch 2:\n{proc.stdout.read() if proc.stdout else ''}"
    saved = load_torch(ckpt / "last.pt")
    assert not saved["finished"]

    train, valid, _ = cyclic_data(3000, n_items=50, length=30)
    out = train_sasrec(
        replace(TINY, max_epochs=saved["epoch"] + 2, patience=40),
        train,
        valid[0],
        valid[1],
        50,
        8,
        ckpt,
        (10,),
        512,
        progress=False,
    )
    printed = capsys.readouterr().out
    assert f"resuming from epoch {saved['epoch']} checkpoint" in printed
    epochs = [h["epoch"] for h in out.history]
    assert epochs == list(range(1, saved["epoch"] + 3))  # the saved epochs, then two new ones
    assert f"epoch {saved['epoch'] + 1:3d}" in printed and f"epoch {saved['epoch']:3d}" not in printed
    assert out.resumed_from == saved["epoch"]


def test_a_finished_or_different_run_starts_afresh(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train, valid, _ = cyclic_data(30)
    train_sasrec(replace(TINY, max_epochs=2), train, valid[0], valid[1], 10, 8, tmp_path, (1,), 64, progress=False)
    capsys.readouterr()
    again = train_sasrec(
        replace(TINY, max_epochs=2), train, valid[0], valid[1], 10, 8, tmp_path, (1,), 64, progress=False
    )
    assert "resuming" not in capsys.readouterr().out and again.resumed_from is None


@pytest.mark.parametrize("positions", ["from_end", "from_start"])
def test_position_ids(positions: str) -> None:
    model = SASRec(n_items=5, max_len=4, cfg=replace(TINY, positions=positions))
    seen = {}
    model.pos_emb.register_forward_hook(lambda mod, inp, out: seen.update(ids=inp[0]))
    model(torch.tensor([[1, 2, 0], [3, 4, 5]]))
    expected = [[2, 3, 3], [1, 2, 3]] if positions == "from_end" else [[0, 1, 2], [0, 1, 2]]
    assert seen["ids"].tolist() == expected  # from_end: the last real item always sits at max_len - 1
