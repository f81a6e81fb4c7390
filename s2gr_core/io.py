"""Atomic output writing: every stage output appears whole or not at all.

A write goes to a temporary sibling (same directory, so the final ``os.replace``
is an atomic rename on one filesystem) and is renamed over the target only when
complete. A crash or an exception leaves the previous output untouched.

The temporary sibling is named ``.<target>.<pid>.<random>.tmp``. A process killed
mid-write (SIGKILL, power loss) cannot clean up, so the next write of the same
target removes the siblings of dead processes first, and restores a directory
output that was moved aside for its swap but never replaced.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


class OutputWriteError(OSError):
    """An output could not be written (disk full, quota, read-only); the message names it."""


FAULT_ENV = "S2GR_FAULT"  # fault injection for tests: "NAME:N" SIGKILLs before the N-th publish of NAME
_publishes: dict[str, int] = {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def recover(target: str | Path) -> None:
    """Clean up after writers of ``target`` that died mid-write: their temporary siblings go,
    and a directory output they had moved aside but not yet replaced is put back."""
    target = Path(target)
    for stale in target.parent.glob(f".{target.name}.*.tmp"):
        pid = stale.name[len(target.name) + 2 :].split(".", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        backup = stale / f"{target.name}.old"
        if backup.exists() and not target.exists():
            os.replace(backup, target)
        shutil.rmtree(stale, ignore_errors=True)


def _injected_fault(target: Path) -> None:
    name, _, count = os.environ.get(FAULT_ENV, "").rpartition(":")
    if name == target.name:
        _publishes[name] = _publishes.get(name, 0) + 1
        if _publishes[name] == int(count):
            os.kill(os.getpid(), signal.SIGKILL)


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it over ``target`` on success.

    Works for files and for directories (a directory target is replaced whole).
    """
    target = Path(target)
    try:  # a read-only or full folder refuses the temporary itself: the same message as a failed write
        target.parent.mkdir(parents=True, exist_ok=True)
        recover(target)
        tmp_dir = Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent))
    except OSError as exc:
        raise OutputWriteError(
            f"{target}: cannot write it ({exc.strerror or exc}); the previous output is kept"
        ) from exc
    tmp = tmp_dir / target.name
    try:
        try:
            yield tmp
        except OSError as exc:  # disk full, file too large, read-only: name the output, not a temp path
            raise OutputWriteError(f"{target}: cannot write it ({exc}); the previous output is kept") from exc
        if not tmp.exists():
            raise FileNotFoundError(f"atomic write of {target} produced nothing")
        _injected_fault(target)
        if tmp.is_dir() and target.exists():
            # Directories cannot be os.replace'd over a non-empty one: swap via a backup.
            backup = tmp_dir / f"{target.name}.old"
            os.replace(target, backup)
            os.replace(tmp, target)
        else:
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def save_torch(obj: Any, target: str | Path) -> None:
    """``torch.save`` of ``obj`` (tensors, containers, plain Python values), atomically."""
    import torch  # here, not at import: most stages never touch torch

    with atomic_path(target) as tmp:
        torch.save(obj, tmp)


def load_torch(path: str | Path, map_location: Any = "cpu") -> Any:
    """What :func:`save_torch` wrote, unpickled with ``weights_only=True``: tensors, containers
    and plain values only, so a crafted file cannot run code when it is loaded."""
    import torch

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(f"{path}: not a checkpoint of plain tensors and values ({err})") from err


def write_parquet(table: pd.DataFrame | pa.Table, target: str | Path, schema: pa.Schema | None = None) -> None:
    """Write a DataFrame or Arrow table as Parquet, atomically, with an explicit schema."""
    if isinstance(table, pd.DataFrame):
        # Drop pandas' schema metadata: the file is then plain Parquet for any reader
        # (pandas cannot read back its own metadata for nested Arrow-backed columns).
        table = pa.Table.from_pandas(table, schema=schema, preserve_index=False).replace_schema_metadata(None)
    elif schema is not None:
        table = table.cast(schema)
    with atomic_path(target) as tmp:
        pq.write_table(table, tmp)


def write_json(obj: Any, target: str | Path) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n", encoding="utf-8")


def write_text(text: str, target: str | Path) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def md5_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
