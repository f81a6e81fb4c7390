"""Model training stages. Each trains, then writes its top-K lists in the common prediction format."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from s2gr_core.config import Params
from s2gr_core.evaluation.predictions import write_predictions
from s2gr_core.io import md5_file, write_json
from s2gr_core.models.sasrec import train_sasrec
from s2gr_core.models.sasrec.train import predict
from s2gr_core.models.training import TIMINGS, TrainOutcome
from s2gr_core.split import load_eval, load_train
from s2gr_core.stages.base import WEIGHTS_TAG, Reporter, StageFailed, StageResult

Splits = tuple[tuple[str, np.ndarray, list[np.ndarray]], ...]  # (split, user ids, histories)


def rank_done(outcome: TrainOutcome) -> StageResult | None:
    """The result of a data-parallel rank other than 0 once training ends (rank 0 alone decodes,
    publishes and logs), or None on rank 0 and on one process."""
    world = outcome.runtime.world if outcome.runtime is not None else None
    if world is None or world.main:
        return None
    return StageResult(summary=f"rank {world.rank} of {world.size} trained; rank 0 publishes")


def catalogue_size(items: Path, top_k: int) -> int:
    """Items in the catalogue; a model stage refuses a catalogue too small for top-K lists of unique items."""
    n_items = pq.read_metadata(items).num_rows
    if n_items < top_k:
        raise StageFailed(
            f"{items}: the catalogue has {n_items} items, fewer than inference.top_k={top_k} unique items per list"
        )
    return n_items


def publish(
    outcome: TrainOutcome,
    rank: Callable[[list[np.ndarray], np.ndarray], tuple[np.ndarray, np.ndarray]],
    splits: Splits,
    *,
    predictions: Path,
    metrics: Path,
    model_dir: Path,
) -> dict[str, float]:
    """Write every split's top-K lists (common format), the training summary and the epoch history.

    ``rank(histories, user_ids)`` -> (items (U, K), scores); its speed is the inference users/s.
    """
    started = time.time()
    lists = {split: (users, *rank(hist, users)) for split, users, hist in splits}
    decode_seconds = time.time() - started
    predictions.mkdir(parents=True, exist_ok=True)
    for split, (users, items_, scores) in lists.items():
        write_predictions(predictions / f"{split}.parquet", users, items_, scores)
    n_users = sum(len(users) for _, users, _ in splits)
    summary = {
        "best_epoch": outcome.best_epoch,
        "epochs_run": outcome.epochs_run,
        "best_valid_ndcg_at_10": outcome.best_valid.get("ndcg_at_10", float("nan")),
        "seconds_per_epoch": round(outcome.seconds_per_epoch, 3),
        "train_samples_per_s": round(outcome.samples_per_second, 1),
        "inference_users_per_s": round(n_users / max(decode_seconds, 1e-9), 1),
        "peak_memory_mb": round(outcome.peak_memory_mb, 1),
        "parameters": sum(p.numel() for p in outcome.model.parameters()),
        # every validation signal of the best epoch (GR: SID NLL, per-position CE, reasoning accuracy)
        **{f"best_valid_{k}": round(float(v), 6) for k, v in outcome.best_valid.items() if k != "ndcg_at_10"},
    }
    write_json(summary, metrics)
    # timings stay in the metrics file and MLflow: the model folder is the same bytes on every re-run
    history = [{k: v for k, v in row.items() if k not in TIMINGS} for row in outcome.history]
    write_json(history, model_dir / "history.json")
    return summary


def model_result(
    name: str,
    seed: int,
    outcome: TrainOutcome,
    summary: dict[str, float],
    *,
    metrics: Path,
    model_dir: Path,
    tags: dict[str, Any] | None = None,
    speed: str = "",
) -> StageResult:
    """The result of a model stage: summary metrics, tags and artifacts for MLflow (the promote stage logs
    the model itself, as a pyfunc).

    ``speed`` is extra text for the one-line summary, after the seconds per epoch.
    """
    resumed = outcome.resumed_from if outcome.resumed_from is not None else "none"
    return StageResult(
        metrics=summary,
        tags={
            "model": name,
            "seed": seed,
            "device": outcome.device,
            **(outcome.runtime.tags() if outcome.runtime is not None else {}),
            **(tags or {}),
            "resumed_from_epoch": resumed,
            **({WEIGHTS_TAG: md5_file(model_dir / "best.pt")} if (model_dir / "best.pt").is_file() else {}),
        },
        artifacts=[metrics, model_dir / "history.json"],
        summary=(
            f"best epoch {outcome.best_epoch}/{outcome.epochs_run}, valid N@10 {summary['best_valid_ndcg_at_10']:.4f}, "
            f"{summary['seconds_per_epoch']:.1f}s/epoch{speed} on {outcome.device}, "
            f"{summary['parameters']:,} parameters"
        ),
    )


def train_sasrec_stage(
    params: Params,
    *,
    train: Path,
    valid: Path,
    test: Path,
    items: Path,
    model_dir: Path,
    predictions: Path,
    metrics: Path,
    resume_dir: Path,
    reporter: Reporter,
) -> StageResult:
    """Train SASRec (early stopping on validation NDCG@10), then rank the catalogue for valid and test users."""
    cfg, inf = params.sasrec, params.inference
    n_items = catalogue_size(items, inf.top_k)
    _, sequences = load_train(str(train))
    valid_users, valid_hist, valid_targets = load_eval(str(valid))
    test_users, test_hist, _ = load_eval(str(test))  # histories only: targets are read by evaluate
    outcome = train_sasrec(
        cfg,
        sequences,
        valid_hist,
        valid_targets,
        n_items,
        params.split.max_history,
        model_dir,
        params.evaluate.ks,
        inf.batch_size,
        inf.exclude_history,
        log=reporter.log_metrics,
        resume_dir=resume_dir,
    )
    if (done := rank_done(outcome)) is not None:
        return done
    device = next(outcome.model.parameters()).device
    splits = (("valid", valid_users, valid_hist), ("test", test_users, test_hist))
    summary = publish(
        outcome,
        lambda hist, _: predict(
            outcome.model,
            hist,
            inf.top_k,
            inf.exclude_history,
            inf.batch_size,
            device,
            outcome.runtime,
            cfg.length_buckets,
        ),
        splits,
        predictions=predictions,
        metrics=metrics,
        model_dir=model_dir,
    )
    return model_result("sasrec", cfg.seed, outcome, summary, metrics=metrics, model_dir=model_dir)
