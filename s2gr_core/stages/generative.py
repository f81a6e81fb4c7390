"""Generative-recommender stages: train_tiger and train_s2gr (one function, the mode bound)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch

from s2gr_core.config import Params
from s2gr_core.models.gr.beam import DecodingTables
from s2gr_core.models.gr.train import Semantic, predict, train_gr
from s2gr_core.semantic.sids import SidTrie, load_sids
from s2gr_core.split import load_eval, load_train
from s2gr_core.stages.base import Reporter, StageFailed, StageResult
from s2gr_core.stages.models import catalogue_size, model_result, publish, rank_done


def load_semantic(sids: Path, n_items: int, device: str = "cpu") -> Semantic:
    """The sids stage's outputs as the tensors the model and the decoder use."""
    try:
        table = load_sids(sids / "sids.parquet", n_items)
    except ValueError as exc:
        raise StageFailed(str(exc)) from exc
    trie = SidTrie.load(sids / "trie.npz")
    with np.load(sids / "clusters.npz") as clusters:
        centroids = torch.as_tensor(clusters["centroids"], dtype=torch.float32)
        cluster_of_code = torch.as_tensor(clusters["cluster_of_code"], dtype=torch.int64)
    return Semantic(table, DecodingTables.from_numpy(trie.children, device), centroids, cluster_of_code)


def train_generative_stage(
    params: Params,
    *,
    mode: Literal["tiger", "s2gr"],
    train: Path,
    valid: Path,
    test: Path,
    items: Path,
    sids: Path,
    model_dir: Path,
    predictions: Path,
    metrics: Path,
    resume_dir: Path,
    reporter: Reporter,
) -> StageResult:
    """Train on SIDs (early stopping on validation NDCG@10), then decode top-K lists for valid and test.

    ``resume_dir`` holds the resume checkpoint (``last.pt``); ``model_dir`` only what is deterministic."""
    cfg, inf = getattr(params, mode), params.inference
    n_items = catalogue_size(items, inf.top_k)
    sem = load_semantic(sids, n_items)
    users, sequences = load_train(str(train))
    valid_split = load_eval(str(valid))
    test_users, test_hist, _ = load_eval(str(test))  # histories only: targets are read by evaluate
    outcome = train_gr(
        cfg,
        mode,
        sem,
        users,
        sequences,
        valid_split,
        params.split.max_history,
        model_dir,
        params.evaluate.ks,
        inf.batch_size,
        log=reporter.log_metrics,
        resume_dir=resume_dir,
    )
    if (done := rank_done(outcome)) is not None:
        return done
    device = next(outcome.model.parameters()).device
    summary = publish(
        outcome,
        lambda hist, split_users: predict(
            outcome.model,
            hist,
            split_users,
            sem,
            cfg.beam,
            inf.top_k,
            inf.batch_size,
            device,
            outcome.runtime,
            cfg.length_buckets,
        ),
        (("valid", valid_split[0], valid_split[1]), ("test", test_users, test_hist)),
        predictions=predictions,
        metrics=metrics,
        model_dir=model_dir,
    )
    return model_result(
        mode,
        cfg.seed,
        outcome,
        summary,
        metrics=metrics,
        model_dir=model_dir,
        tags={"beam": cfg.beam},
        speed=(
            f", {summary['train_samples_per_s']:.0f} samples/s, "
            f"decoding {summary['inference_users_per_s']:.0f} users/s (beam {cfg.beam})"
        ),
    )
