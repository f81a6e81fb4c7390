"""``requirements.lock``: every package of the project's environment pinned, and the pyproject it came from.

``make lock`` writes it from the venv after ``pip install -e '.[dev]'`` resolved ``pyproject.toml``;
``make install`` installs exactly it (``pip install -r requirements.lock``, then the project without
dependencies). The first line records a digest of pyproject's dependency lists: ``tests/test_lock.py``
fails when they change and the lock was not rewritten.

Local version labels are dropped (``torch==2.13.0+cpu`` -> ``torch==2.13.0``): the pin then matches the
CPU wheel this machine's pip finds on disk and the PyPI release elsewhere, as ``pyproject.toml`` does.

    python infra/lock.py            # rewrite requirements.lock from the running environment
    python infra/lock.py --check    # exit 1 when requirements.lock is stale
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
HEADER = "# pyproject-dependencies-sha256: "


def pyproject_digest(pyproject: Path = ROOT / "pyproject.toml") -> str:
    """sha256 of the project's dependencies and optional dependencies, as declared."""
    project = tomllib.loads(pyproject.read_text())["project"]
    declared = {"dependencies": project["dependencies"], "optional": project.get("optional-dependencies", {})}
    return hashlib.sha256(json.dumps(declared, sort_keys=True).encode()).hexdigest()


def frozen() -> list[str]:
    """``name==version`` of every installed distribution but the project itself, sorted, no local labels."""
    out = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--exclude-editable"], capture_output=True, text=True, check=True
    ).stdout
    pins = [line.split("+", 1)[0] for line in out.splitlines() if "==" in line and not line.startswith("#")]
    return sorted(pins, key=str.lower)


def recorded_digest(lock: Path = LOCK) -> str | None:
    first = lock.read_text().splitlines()[0] if lock.is_file() else ""
    return first[len(HEADER) :] if first.startswith(HEADER) else None


def main(argv: list[str]) -> int:
    if "--check" in argv:
        if recorded_digest() != pyproject_digest():
            print(f"{LOCK.name} is stale: pyproject.toml's dependencies changed; run `make lock`", file=sys.stderr)
            return 1
        return 0
    lines = [
        f"{HEADER}{pyproject_digest()}",
        "# Every package of the project's environment, pinned (written by `make lock`: infra/lock.py).",
        *frozen(),
    ]
    LOCK.write_text("\n".join(lines) + "\n")
    print(f"wrote {LOCK.name}: {len(lines) - 2} packages")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
