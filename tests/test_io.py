"""Atomic outputs that survive a killed writer; checkpoints read back without running code a crafted file carries."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from s2gr_core.io import FAULT_ENV, load_torch, recover, save_torch, write_text


class Payload:
    """What a crafted checkpoint would hold: unpickling it would create ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (str(self.marker),))


def test_a_checkpoint_round_trips(tmp_path: Path) -> None:
    state = {"model": {"w": torch.arange(3.0)}, "epoch": 2, "rng": {"state": 2**100}, "history": [{"loss": 0.5}]}
    save_torch(state, tmp_path / "ckpt" / "last.pt")
    back = load_torch(tmp_path / "ckpt" / "last.pt")
    assert back["epoch"] == 2 and back["rng"] == {"state": 2**100} and back["history"] == [{"loss": 0.5}]
    torch.testing.assert_close(back["model"]["w"], torch.arange(3.0))
    assert [p.name for p in (tmp_path / "ckpt").iterdir()] == ["last.pt"]  # no temporary left behind


def test_a_crafted_checkpoint_is_refused_without_running_its_code(tmp_path: Path) -> None:
    marker, path = tmp_path / "ran", tmp_path / "best.pt"
    torch.save({"model": Payload(marker)}, path)
    with pytest.raises(ValueError, match=r"best\.pt: not a checkpoint of plain tensors and values"):
        load_torch(path)
    assert not marker.exists()


def write_killed(target: Path, nth: int, count: int) -> subprocess.CompletedProcess:
    """A process that publishes ``target`` ``count`` times and is SIGKILLed (S2GR_FAULT) before the nth."""
    code = (
        "import sys; from pathlib import Path; from s2gr_core.io import write_text\n"
        f"for i in range({count}): write_text(f'version {{i + 1}}', Path({str(target)!r}))\n"
    )
    env = {**os.environ, FAULT_ENV: f"{target.name}:{nth}"}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)


def test_a_write_killed_before_its_publish_leaves_the_previous_version(tmp_path: Path) -> None:
    target = tmp_path / "out" / "metrics.json"
    proc = write_killed(target, nth=3, count=5)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert target.read_text() == "version 2"
    assert len(list(target.parent.glob(".metrics.json.*.tmp"))) == 1  # the dead writer's temporary
    write_text("version 3", target)
    assert [p.name for p in target.parent.iterdir()] == ["metrics.json"]  # the next write cleaned it up
    assert target.read_text() == "version 3"


def test_recover_restores_a_directory_moved_aside_and_spares_live_writers(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    target = tmp_path / "embed"
    # a dead writer moved the last good directory aside and died before renaming its new one in
    stale = tmp_path / f".embed.{pid}.abc.tmp"
    (stale / "embed.old").mkdir(parents=True)
    (stale / "embed.old" / "embeddings.npy").write_bytes(b"good")
    (stale / "embed").mkdir()
    live = tmp_path / f".embed.{os.getpid()}.xyz.tmp"  # this process: still writing
    live.mkdir()
    recover(target)
    assert (target / "embeddings.npy").read_bytes() == b"good"
    assert not stale.exists() and live.exists()


def test_a_full_disk_names_the_output_and_keeps_the_previous_one(tmp_path: Path) -> None:
    target = tmp_path / "train.parquet"
    write_text("the last good output", target)

    def small_disk() -> None:  # the child can write at most 4 KiB per file: a full disk to its writes
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    code = (
        "import sys; from pathlib import Path; from s2gr_core.io import OutputWriteError, write_parquet\n"
        "import pandas as pd\n"
        f"try: write_parquet(pd.DataFrame({{'x': range(100_000)}}), Path({str(target)!r}))\n"
        "except OutputWriteError as exc: sys.exit(str(exc))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], preexec_fn=small_disk, capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"{target}: cannot write it (") and "the previous output is kept" in proc.stderr
    assert target.read_text() == "the last good output"
    assert [p.name for p in tmp_path.iterdir()] == ["train.parquet"]
