"""Checkpoints: written atomically, read back without running code a crafted file carries."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from s2gr_core.io import load_torch, save_torch


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
