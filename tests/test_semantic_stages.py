"""The embed -> cooccur -> codebook -> sids stages on the tiny real-format fixture."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from s2gr_core.config import Params
from s2gr_core.semantic.sids import SidTrie
from s2gr_core.stages import StageFailed, get_stage
from tests.test_stage_failures import snapshot

UPSTREAM = ("fetch", "ingest", "validate", "split")
SEMANTIC = ("embed", "cooccur", "codebook", "sids")


def run(params: Params, root: Path, names: tuple[str, ...]) -> None:
    for name in names:
        get_stage(name).run(params, root)


@pytest.fixture
def semantic_root(params: Params, tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    run(params, root, UPSTREAM + SEMANTIC)
    return root


def test_sids_are_unique_decodable_and_clustered(params: Params, semantic_root: Path) -> None:
    folder = semantic_root / "data" / "sids"
    sids = np.stack(pd.read_parquet(folder / "sids.parquet")["sid"].map(np.asarray).to_numpy())
    n_items = pq.read_metadata(semantic_root / "data" / "processed" / "items.parquet").num_rows
    assert sids.shape == (n_items, params.codebook.levels + 1)
    assert len(np.unique(sids, axis=0)) == n_items
    trie = SidTrie.load(folder / "trie.npz")
    np.testing.assert_array_equal(trie.enumerate(), sids)
    with np.load(folder / "clusters.npz") as clusters:
        assert clusters["cluster_of_code"].shape == (params.codebook.levels, params.codebook.codebook_size)
        assert clusters["centroids"].shape[:2] == (params.codebook.levels, params.sids.clusters)
    metrics = json.loads((semantic_root / "metrics" / "sids.json").read_text())
    assert "sid_changed_share" not in metrics  # first run: nothing to compare with
    codebook = json.loads((semantic_root / "metrics" / "codebook.json").read_text())
    assert {"l1_utilisation", "l1_perplexity", "l1_residual_error", "collision_rate"} <= set(codebook)
    assert (semantic_root / "reports" / "codebook_usage.png").stat().st_size > 1000


def test_retrain_reports_sid_stability(params: Params, semantic_root: Path) -> None:
    run(params, semantic_root, ("codebook", "sids"))  # same seed and inputs -> same SIDs
    assert json.loads((semantic_root / "metrics" / "sids.json").read_text())["sid_changed_share"] == 0.0
    reseeded = replace(params, codebook=replace(params.codebook, seed=7))
    run(reseeded, semantic_root, ("codebook", "sids"))
    assert json.loads((semantic_root / "metrics" / "sids.json").read_text())["sid_changed_share"] > 0.0


def test_embed_reuses_unchanged_texts_and_reencodes_changed_ones(params: Params, semantic_root: Path) -> None:
    matrix = semantic_root / "data" / "embed" / "embeddings.npy"
    mtime = matrix.stat().st_mtime_ns
    again = get_stage("embed").run(params, semantic_root)
    assert again.metrics["reused"] == 1 and matrix.stat().st_mtime_ns == mtime
    shorter = replace(params, embed=replace(params.embed, template=("Title: {title}",)))
    changed = get_stage("embed").run(shorter, semantic_root)
    assert changed.metrics["reused"] == 0 and matrix.stat().st_mtime_ns != mtime


def test_a_damaged_previous_matrix_is_reencoded_not_trusted(params: Params, semantic_root: Path) -> None:
    matrix = semantic_root / "data" / "embed" / "embeddings.npy"
    np.save(matrix, np.load(matrix)[:-1])  # same fingerprint in meta.json, wrong content
    result = get_stage("embed").run(params, semantic_root)
    assert result.metrics["reused"] == 0 and np.load(matrix).shape == (40, 384)


def test_embedding_rows_not_matching_items_fail_cooccur_and_keep_its_outputs(
    params: Params, semantic_root: Path
) -> None:
    before = snapshot(semantic_root, ["cooccur", "codebook", "sids"])
    matrix = semantic_root / "data" / "embed" / "embeddings.npy"
    np.save(matrix, np.load(matrix)[:-3])
    with pytest.raises(StageFailed, match=r"embeddings.npy: 37 embedding rows for 40 items"):
        get_stage("cooccur").run(params, semantic_root)
    assert snapshot(semantic_root, ["cooccur", "codebook", "sids"]) == before


def test_nan_embeddings_fail_the_codebook_and_keep_its_outputs(params: Params, semantic_root: Path) -> None:
    before = snapshot(semantic_root, ["codebook", "sids"])
    smoothed = semantic_root / "data" / "graph" / "smoothed.npy"
    x = np.load(smoothed)
    x[5, 3] = np.nan
    np.save(smoothed, x)
    with pytest.raises(StageFailed, match=r"smoothed.npy: 1 row\(s\) contain NaN/inf, first item_id 5"):
        get_stage("codebook").run(params, semantic_root)
    assert snapshot(semantic_root, ["codebook", "sids"]) == before


def test_empty_catalogue_fails_embed(params: Params, tmp_path: Path) -> None:
    root = tmp_path / "proj"
    run(params, root, UPSTREAM)
    items = root / "data" / "processed" / "items.parquet"
    pq.write_table(pq.read_table(items).slice(0, 0), items)
    with pytest.raises(StageFailed, match=r"items\.parquet: the catalogue is empty"):
        get_stage("embed").run(params, root)
    assert not (root / "data" / "embed").exists()


def test_codebook_larger_than_the_catalogue_is_named(params: Params, semantic_root: Path) -> None:
    big = replace(params, codebook=replace(params.codebook, codebook_size=64), sids=replace(params.sids, clusters=4))
    with pytest.raises(StageFailed, match=r"codebook.codebook_size=64 exceeds the 40 items"):
        get_stage("codebook").run(big, semantic_root)
