"""Fetching raw files: local copies first, else the recbole wheel with strict checksums."""

from __future__ import annotations

import json
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from s2gr_core.data import fetch as fetch_mod
from s2gr_core.data import get_dataset
from s2gr_core.data.fetch import FetchError, fetch, read_manifest
from s2gr_core.io import md5_file
from tests.fixtures import write_ml100k


def fake_wheel(tmp_path: Path, files: dict[str, Path]) -> Path:
    wheel = tmp_path / "recbole-1.2.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, path in files.items():
            zf.write(path, f"recbole/dataset_example/ml-100k/{name}")
    return wheel


def test_local_copy_is_used_and_recorded(tmp_path: Path, data_dir: Path) -> None:
    spec = get_dataset("ml-100k")
    result = fetch(spec, data_dir, tmp_path / "raw")
    assert result.source == str(data_dir / "ml-100k")
    assert not result.canonical  # a tiny copy is not the canonical release: recorded, not refused
    manifest = read_manifest(tmp_path / "raw")
    assert manifest["dataset"] == "ml-100k"
    assert manifest["files"]["ml-100k.inter"]["md5"] == md5_file(data_dir / "ml-100k" / "ml-100k.inter")
    # deterministic: fetching the same data twice gives the same bytes (DVC sees no change)
    before = (tmp_path / "raw" / "MANIFEST.json").read_bytes()
    fetch(spec, data_dir, tmp_path / "raw")
    assert (tmp_path / "raw" / "MANIFEST.json").read_bytes() == before


def test_missing_beauty_explains_where_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match=r"amazon-beauty: no local copy found .* S2GR_DATA_DIR .* McAuley"):
        fetch(get_dataset("amazon-beauty"), tmp_path, tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


def test_local_copy_missing_a_file_is_an_error_not_a_download(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    partial = tmp_path / "data" / "ml-100k"
    partial.mkdir(parents=True)
    (partial / "ml-100k.inter").write_bytes((data_dir / "ml-100k" / "ml-100k.inter").read_bytes())
    monkeypatch.setattr(fetch_mod, "download_wheel", lambda req, dest: pytest.fail("downloaded instead"))
    with pytest.raises(FetchError, match=rf"{partial}: the local copy of ml-100k lacks ml-100k.item .*public download"):
        fetch(get_dataset("ml-100k"), tmp_path / "data", tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


def test_wheel_is_extracted_and_verified(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = write_ml100k(tmp_path / "src")
    files = {n: src / n for n in ("ml-100k.inter", "ml-100k.item")}
    spec = replace(get_dataset("ml-100k"), files={n: md5_file(p) for n, p in files.items()})
    monkeypatch.setattr(fetch_mod, "download_wheel", lambda req, dest: fake_wheel(tmp_path, files))
    result = fetch(spec, None, tmp_path / "raw")
    assert result.source == "pypi:recbole==1.2.1" and result.canonical
    assert (tmp_path / "raw" / "ml-100k.inter").read_bytes() == files["ml-100k.inter"].read_bytes()


def test_wheel_with_wrong_checksum_is_refused_and_old_output_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data_dir: Path
) -> None:
    raw = tmp_path / "raw"
    fetch(get_dataset("ml-100k"), data_dir, raw)  # a previous good fetch
    before = json.loads((raw / "MANIFEST.json").read_text())
    src = write_ml100k(tmp_path / "src", seed=5)
    files = {n: src / n for n in ("ml-100k.inter", "ml-100k.item")}
    monkeypatch.setattr(fetch_mod, "download_wheel", lambda req, dest: fake_wheel(tmp_path, files))
    with pytest.raises(FetchError, match=r"ml-100k.inter has md5 \w+, expected a8a8c3f165aedc53f63b5dc0a0463b14"):
        fetch(get_dataset("ml-100k"), None, raw)
    assert json.loads((raw / "MANIFEST.json").read_text()) == before


@pytest.mark.network
def test_real_recbole_wheel_download(tmp_path: Path) -> None:
    """The fresh-machine path for real: pip download + canonical checksums."""
    result = fetch(get_dataset("ml-100k"), None, tmp_path / "raw")
    assert result.canonical
    assert result.files["ml-100k.inter"]["bytes"] == 1979230
