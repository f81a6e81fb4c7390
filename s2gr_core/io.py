"""Atomic output writing: every stage output appears whole or not at all.

A write goes to a temporary sibling (same directory, so the final ``os.replace``
is an atomic rename on one filesystem) and is renamed over the target only when
complete. A crash or an exception leaves the previous output untouched.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it over ``target`` on success.

    Works for files and for directories (a directory target is replaced whole).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    tmp = tmp_dir / target.name
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"atomic write of {target} produced nothing")
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
