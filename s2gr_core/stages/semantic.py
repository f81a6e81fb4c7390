"""Semantic-foundation stages: embed -> cooccur -> codebook -> sids (METHOD.md §3)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

from s2gr_core.config import Params
from s2gr_core.io import atomic_path, write_json, write_parquet
from s2gr_core.semantic.codebook import fit_codebook, load_codebook, usage_plot
from s2gr_core.semantic.embed import EmbeddingError, encode, fingerprint, load_embeddings, render_texts
from s2gr_core.semantic.graph import cooccurrence, graph_stats, normalise, smooth
from s2gr_core.semantic.quantize import collision_stats
from s2gr_core.semantic.sids import (
    SidTrie,
    changed_share,
    code_clusters,
    cosine_mismatch,
    deduplicate,
    load_sids,
)
from s2gr_core.split import load_train
from s2gr_core.stages.base import Reporter, StageFailed, StageResult

SIDS_SCHEMA = pa.schema([("item_id", pa.int32()), ("sid", pa.list_(pa.int32()))])


def read_items(items: Path) -> pd.DataFrame:
    """The items table ordered by item_id; ids must be exactly 0..N-1 (they index every matrix)."""
    frame = pd.read_parquet(items).sort_values("item_id", kind="stable").reset_index(drop=True)
    if frame.empty:
        raise StageFailed(f"{items}: the catalogue is empty")
    if not np.array_equal(frame["item_id"].to_numpy(), np.arange(len(frame))):
        raise StageFailed(f"{items}: item_id must be 0..{len(frame) - 1} without gaps; re-run ingest")
    return frame


def embed_stage(params: Params, *, items: Path, embeddings: Path, metrics: Path) -> StageResult:
    """Encode one text per item; reuse the previous matrix when texts and encoder are unchanged."""
    cfg = params.embed
    frame = read_items(items)
    try:
        texts = render_texts(frame, cfg.template)
    except EmbeddingError as exc:
        raise StageFailed(str(exc)) from exc
    key = fingerprint(texts, cfg.encoder)
    meta_path = embeddings / "meta.json"
    previous = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    started = time.time()
    matrix = None
    if previous.get("fingerprint") == key and (embeddings / "embeddings.npy").is_file():
        try:
            matrix = load_embeddings(embeddings / "embeddings.npy", len(frame))
        except (EmbeddingError, ValueError, OSError):
            matrix = None  # a damaged previous output is re-encoded, not trusted
    reused = matrix is not None
    if matrix is None:
        try:
            matrix = encode(texts, cfg.encoder, cfg.batch_size, cfg.device)
        except EmbeddingError as exc:
            raise StageFailed(str(exc)) from exc
        meta = {
            "fingerprint": key,
            "encoder": cfg.encoder,
            "items": len(frame),
            "dim": int(matrix.shape[1]),
        }  # no timings in a data output: its hash would change on every run (the metrics file has them)
        with atomic_path(embeddings) as tmp:
            tmp.mkdir()
            np.save(tmp / "embeddings.npy", matrix)
            pq.write_table(
                pa.table({"item_id": frame["item_id"].astype("int32"), "text": texts}), tmp / "texts.parquet"
            )
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    seconds = time.time() - started
    empty = sum(1 for t in texts if not t)
    summary = {
        "items": len(frame),
        "dim": int(matrix.shape[1]),
        "empty_texts": empty,
        "reused": int(reused),
        "seconds": round(seconds, 3),
        "texts_per_s": round(len(texts) / max(seconds, 1e-9), 1),
    }
    write_json(summary, metrics)
    how = "reused (texts and encoder unchanged)" if reused else f"encoded at {summary['texts_per_s']:.0f} texts/s"
    return StageResult(
        metrics=summary,
        tags={"encoder": cfg.encoder},
        artifacts=[embeddings / "meta.json"],
        summary=f"{len(frame):,} items -> {matrix.shape[1]}-d embeddings with {cfg.encoder}, {how}",
    )


def cooccur_stage(
    params: Params, *, train: Path, items: Path, embeddings: Path, graph: Path, metrics: Path
) -> StageResult:
    """Co-occurrence graph of the training sequences and PPR-smoothed embeddings (H_align)."""
    cfg = params.cooccur
    n_items = len(read_items(items))
    try:
        features = load_embeddings(embeddings / "embeddings.npy", n_items)
    except EmbeddingError as exc:
        raise StageFailed(str(exc)) from exc
    started = time.time()
    _, sequences = load_train(str(train))
    try:
        adjacency = cooccurrence(sequences, n_items, cfg.window, cfg.weighting)
    except ValueError as exc:
        raise StageFailed(f"{train}: {exc}") from exc
    smoothed = smooth(features, normalise(adjacency), cfg.alpha, cfg.hops)
    with atomic_path(graph) as tmp:
        tmp.mkdir()
        sp.save_npz(tmp / "adjacency.npz", adjacency)
        np.save(tmp / "smoothed.npy", smoothed)
    stats = graph_stats(adjacency).as_dict()
    drift = float(np.linalg.norm(smoothed - features, axis=1).mean())
    summary = {**stats, "mean_shift": round(drift, 6), "seconds": round(time.time() - started, 3)}
    write_json(summary, metrics)
    return StageResult(
        metrics=summary,
        summary=(
            f"{stats['edges']:,} edges (density {stats['density']:.2e}), {stats['isolated_items']} isolated items, "
            f"median degree {stats['degree_p50']:.0f}; smoothed with alpha={cfg.alpha}, K={cfg.hops}"
        ),
    )


def codebook_stage(
    params: Params,
    *,
    graph: Path,
    items: Path,
    model_dir: Path,
    usage: Path,
    metrics: Path,
    reporter: Reporter,
) -> StageResult:
    """Fit the tokenizer on H_align; per-level utilisation, perplexity, residual error; collisions."""
    cfg = params.codebook
    n_items = len(read_items(items))
    try:
        x = load_embeddings(graph / "smoothed.npy", n_items)
        book = fit_codebook(x, cfg, log=reporter.log_metrics)
    except (EmbeddingError, ValueError) as exc:
        raise StageFailed(str(exc)) from exc
    summary = {**book.metrics(), "seconds": round(book.seconds, 3)}
    with atomic_path(model_dir) as tmp:
        tmp.mkdir()
        book.save(tmp / "codebook.pt", params.section("codebook"))
        (tmp / "history.json").write_text(json.dumps(book.history, indent=1) + "\n")
    usage_plot(book, usage, f"{cfg.tokenizer} on {params.data.name}: {cfg.levels} x {cfg.codebook_size} codes")
    write_json(summary, metrics)
    levels = ", ".join(f"{summary[f'l{i + 1}_utilisation']:.1%}" for i in range(cfg.levels))
    return StageResult(
        metrics=summary,
        tags={"tokenizer": cfg.tokenizer},
        artifacts=[usage, model_dir / "history.json"],
        summary=(
            f"{cfg.tokenizer}: utilisation per level {levels}; collisions {summary['collision_rate']:.2%} of items; "
            f"reconstruction error {summary['recon_error']:.3f}; {book.seconds:.1f}s"
        ),
    )


def sids_stage(params: Params, *, model_dir: Path, items: Path, sids: Path, metrics: Path) -> StageResult:
    """Unique SIDs (L codes + a de-dup code), decoding tables, and per-level code clusters."""
    n_items = len(read_items(items))
    book = load_codebook(model_dir / "codebook.pt")
    if len(book.codes) != n_items:
        raise StageFailed(
            f"{model_dir / 'codebook.pt'}: codes for {len(book.codes)} items but {items} has {n_items}; "
            "re-run the codebook stage"
        )
    started = time.time()
    ids = deduplicate(book.codes)
    trie = SidTrie.build(ids)
    if not np.array_equal(trie.lookup(ids), np.arange(n_items)):
        raise StageFailed("decoding tables do not map every SID back to its item")
    try:
        assign, centroids = code_clusters(
            book.codebooks, params.sids.clusters, params.sids.seed, params.sids.cluster_metric
        )
    except ValueError as exc:
        raise StageFailed(f"sids.clusters: {exc}") from exc
    try:  # the previous run's SIDs, when there is one for the same catalogue
        previous = load_sids(sids / "sids.parquet", n_items)
    except (FileNotFoundError, ValueError):
        previous = None
    changed = changed_share(previous, ids)
    with atomic_path(sids) as tmp:
        tmp.mkdir()
        write_parquet(
            pa.table(
                {"item_id": np.arange(n_items, dtype=np.int32), "sid": ids.astype(np.int32).tolist()},
                schema=SIDS_SCHEMA,
            ),
            tmp / "sids.parquet",
        )
        trie.save(tmp / "trie.npz")
        with open(tmp / "clusters.npz", "wb") as fh:
            np.savez(fh, cluster_of_code=assign, centroids=centroids)
    sizes = np.stack([np.bincount(a, minlength=params.sids.clusters) for a in assign])
    summary = {
        **collision_stats(book.codes),
        "sid_length": int(ids.shape[1]),
        "dedup_vocab": int(trie.vocab[-1]),
        "decoding_states": int(sum(t.shape[0] for t in trie.children)),
        "clusters_per_level": params.sids.clusters,
        "codes_per_cluster_min": int(sizes.min()),
        "codes_per_cluster_max": int(sizes.max()),
        "cluster_cosine_mismatch": round(cosine_mismatch(book.codebooks, assign, centroids), 4),
        "seconds": round(time.time() - started, 3),
    }
    if changed is not None:
        summary["sid_changed_share"] = round(changed, 6)
    write_json(summary, metrics)
    stability = "first run" if changed is None else f"{changed:.1%} of SIDs changed since the previous run"
    return StageResult(
        metrics=summary,
        summary=(
            f"{n_items:,} unique SIDs of length {ids.shape[1]} (collisions {summary['collision_rate']:.2%}, "
            f"de-dup vocabulary {summary['dedup_vocab']}); {stability}"
        ),
    )
