"""requirements.lock: current with pyproject.toml, consistent with its exact pins, and what is installed."""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "infra"))

from lock import LOCK, pyproject_digest, recorded_digest


def pins(lines: list[str]) -> dict[str, str]:
    found = (re.match(r"^([A-Za-z0-9_.\-]+)==([^;\s]+)", line.strip()) for line in lines)
    return {re.sub(r"[-_.]+", "-", m[1]).lower(): m[2] for m in found if m}


def test_the_lock_was_written_for_this_pyproject() -> None:
    assert recorded_digest() == pyproject_digest(), "requirements.lock is stale: run `make lock` and commit it"


def test_the_lock_keeps_every_exact_pin_of_pyproject() -> None:
    import tomllib

    declared = pins(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"])
    locked = pins(LOCK.read_text().splitlines())
    assert declared and {name: locked.get(name) for name in declared} == declared


def test_the_environment_is_the_lock() -> None:
    locked = pins(LOCK.read_text().splitlines())
    installed = {re.sub(r"[-_.]+", "-", d.metadata["Name"]).lower(): d.version.split("+")[0]
                 for d in metadata.distributions()}  # fmt: skip
    assert len(locked) > 100
    assert {n: (v, installed.get(n)) for n, v in locked.items() if installed.get(n) != v} == {}


def test_a_changed_dependency_list_makes_the_lock_stale(tmp_path: Path) -> None:
    text = (REPO / "pyproject.toml").read_text()
    changed = tmp_path / "pyproject.toml"
    changed.write_text(text.replace('"tqdm>=4.66"', '"tqdm>=4.67"'))
    assert pyproject_digest(changed) != recorded_digest()  # what `make install` and the first test refuse
