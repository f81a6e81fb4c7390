"""SIDReasoner stages: the task corpus and tokenizer, stage-1 alignment SFT, stage-2 reasoning SFT,
and the constrained decoding of top-K lists (the common prediction format)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from s2gr_core.config import Params
from s2gr_core.evaluation.predictions import write_predictions
from s2gr_core.io import atomic_path, md5_file, write_json, write_parquet
from s2gr_core.models.gr.beam import DecodingTables
from s2gr_core.models.runtime import runtime_for
from s2gr_core.models.sidreasoner.corpus import Catalogue, build_corpus, next_sid_prompt, thinking_prompt
from s2gr_core.models.sidreasoner.decode import decode_lists
from s2gr_core.models.sidreasoner.model import build_model, greedy, load_lm
from s2gr_core.models.sidreasoner.sft import train_phase
from s2gr_core.models.sidreasoner.tokenizer import build_tokenizer, code_token_ids, encode
from s2gr_core.models.sidreasoner.tokens import ANGLE_TOKEN, sid_texts, sid_tokens
from s2gr_core.models.training import TIMINGS, TrainOutcome
from s2gr_core.semantic.sids import SidTrie, load_sids
from s2gr_core.split import load_eval, load_train
from s2gr_core.stages.base import Reporter, StageFailed, StageResult
from s2gr_core.stages.models import catalogue_size

CORPUS, TOKENIZER = "corpus.parquet", "tokenizer"


def catalogue(params: Params, items: Path, sids: Path) -> tuple[Catalogue, SidTrie]:
    frame = pd.read_parquet(items)
    try:
        table = load_sids(sids / "sids.parquet", len(frame))
    except ValueError as exc:
        raise StageFailed(str(exc)) from exc
    return Catalogue.from_items(frame, sid_texts(table), params.data.name), SidTrie.load(sids / "trie.npz")


def corpus_stage(params: Params, *, train: Path, items: Path, sids: Path, corpus: Path, metrics: Path) -> StageResult:
    """Every stage-1/2 task from the training split (never a validation or test target), and the tokenizer."""
    cfg = params.sidreasoner
    cat, trie = catalogue(params, items, sids)
    users, sequences = load_train(str(train))
    frame = build_corpus(cat, users, sequences, cfg.corpus, cfg.seed)
    # the tokenizer learns the words of the items and templates; SID codes are whole tokens of their own
    texts = [*pd.read_parquet(items, columns=["text"])["text"], *frame["prompt"], *frame["response"]]
    texts = [ANGLE_TOKEN.sub(" ", t) for t in texts]
    with atomic_path(corpus) as tmp:
        tmp.mkdir()
        write_parquet(frame, tmp / CORPUS)
        tokenizer = build_tokenizer(
            cfg.model.base_model, texts, cfg.model.vocab_size, sid_tokens(trie.vocab), tmp / TOKENIZER
        )
    sizes = frame.groupby("task").size()
    texts_all = (frame["prompt"] + frame["response"]).tolist()
    lengths = [len(i) for i in tokenizer(texts_all, add_special_tokens=False)["input_ids"]]
    summary = {
        "samples": len(frame),
        **{f"samples_{task}": int(n) for task, n in sizes.items()},
        "vocab": len(tokenizer),
        "tokens_mean": round(float(np.mean(lengths)), 1),
        "tokens_max": int(np.max(lengths)),
    }
    write_json(summary, metrics)
    return StageResult(
        metrics=summary,
        tags={"base_model": cfg.model.base_model or "built"},
        summary=(
            f"{len(frame):,} samples over {len(sizes)} tasks ({summary['tokens_mean']:.0f} tokens on average), "
            f"tokenizer of {len(tokenizer):,} tokens"
        ),
    )


def validation_samples(
    tokenizer: PreTrainedTokenizerBase, cat: Catalogue, valid: Path, history: int, max_length: int
) -> tuple[list[list[int]], list[list[int]]]:
    """The non-thinking next-SID task on the validation users: what both SFT phases stop on."""
    _, hist, targets = load_eval(str(valid))
    prompts = [next_sid_prompt(cat, h[-history:].tolist()) for h in hist]
    return encode(tokenizer, ["chat"] * len(prompts), prompts, [cat.sid[t] for t in targets], False, max_length)


def align_stage(
    params: Params,
    *,
    corpus: Path,
    valid: Path,
    items: Path,
    sids: Path,
    model_dir: Path,
    metrics: Path,
    resume_dir: Path,
    reporter: Reporter,
) -> StageResult:
    """Stage 1: SID-language alignment, multi-task SFT from the base model (built or local weights)."""
    return sft(params, "align", None, corpus, valid, items, sids, model_dir, metrics, resume_dir, reporter)


def reason_stage(
    params: Params,
    *,
    start_dir: Path,
    corpus: Path,
    valid: Path,
    items: Path,
    sids: Path,
    model_dir: Path,
    metrics: Path,
    resume_dir: Path,
    reporter: Reporter,
) -> StageResult:
    """Stage 2: reasoning activation, SFT of the aligned model on ``<think>`` reasoning ``</think>`` SID."""
    return sft(params, "reason", start_dir, corpus, valid, items, sids, model_dir, metrics, resume_dir, reporter)


def sft(
    params: Params,
    phase: str,
    start_dir: Path | None,
    corpus: Path,
    valid: Path,
    items: Path,
    sids: Path,
    model_dir: Path,
    metrics: Path,
    resume_dir: Path,
    reporter: Reporter,
) -> StageResult:
    """One SFT phase: ``align`` starts from the base model, ``reason`` from ``start_dir`` (the aligned one)."""
    cfg, phase_cfg = params.sidreasoner, getattr(params.sidreasoner, phase)
    cat, _ = catalogue(params, items, sids)
    runtime = runtime_for(cfg.device, cfg.threads, cfg.precision, False)
    if start_dir is None:
        tokenizer = AutoTokenizer.from_pretrained(corpus / TOKENIZER, local_files_only=True)
        model, start = build_model(cfg.model, tokenizer, cfg.seed), f"base:{cfg.model.base_model or 'built'}"
    else:
        tokenizer = AutoTokenizer.from_pretrained(start_dir, local_files_only=True)
        model, start = load_lm(start_dir, runtime.device), md5_file(start_dir / "model.safetensors")
        greedy(model, tokenizer)
    frame = pd.read_parquet(corpus / CORPUS)
    frame = frame[frame["phase"] == phase]
    if frame.empty:
        raise StageFailed(f"{corpus / CORPUS}: no {phase} samples; check sidreasoner.corpus")
    train = encode(
        tokenizer,
        frame["kind"].tolist(),
        frame["prompt"].tolist(),
        frame["response"].tolist(),
        phase == "reason",
        cfg.model.max_length,
    )
    valid_set = validation_samples(tokenizer, cat, valid, cfg.corpus.history, cfg.model.max_length)
    outcome = train_phase(
        model,
        train,
        valid_set,
        phase_cfg,
        runtime,
        pad=tokenizer.pad_token_id,
        seed=cfg.seed,
        start=start,
        resume_dir=resume_dir,
        name=phase,
        log=reporter.log_metrics,
    )
    save_lm(outcome, tokenizer, model_dir)
    summary = {
        "best_epoch": outcome.best_epoch,
        "epochs_run": outcome.epochs_run,
        "best_valid_sid_nll": round(outcome.best_valid["sid_nll"], 6),
        "seconds_per_epoch": round(outcome.seconds_per_epoch, 3),
        "train_samples_per_s": round(outcome.samples_per_second, 1),
        "peak_memory_mb": round(outcome.peak_memory_mb, 1),
        "parameters": sum(p.numel() for p in outcome.model.parameters()),
    }
    write_json(summary, metrics)
    return StageResult(
        metrics=summary,
        tags={"model": f"sidreasoner_{phase}", "seed": cfg.seed, "device": outcome.device, **runtime.tags()},
        artifacts=[metrics, model_dir / "history.json"],
        summary=(
            f"best epoch {outcome.best_epoch}/{outcome.epochs_run}, valid SID NLL "
            f"{summary['best_valid_sid_nll']:.3f}, {summary['seconds_per_epoch']:.1f}s/epoch, "
            f"{summary['train_samples_per_s']:.0f} samples/s on {outcome.device}, "
            f"{summary['parameters']:,} parameters"
        ),
    )


def save_lm(outcome: TrainOutcome, tokenizer: PreTrainedTokenizerBase, model_dir: Path) -> None:
    """The best weights and the tokenizer as one Hugging Face directory (what the next phase loads),
    with the epoch history; replaced whole, or not at all."""
    history = [{k: v for k, v in row.items() if k not in TIMINGS} for row in outcome.history]
    hf_logging.disable_progress_bar()
    with atomic_path(model_dir) as tmp:
        outcome.model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(history, tmp / "history.json")


def infer_stage(
    params: Params,
    *,
    model_dir: Path,
    items: Path,
    sids: Path,
    valid: Path,
    test: Path,
    predictions: Path,
    metrics: Path,
) -> StageResult:
    """Top-K lists for every validation and test user: constrained beam search over real items' SIDs."""
    cfg, inf = params.sidreasoner, params.inference
    catalogue_size(items, inf.top_k)
    cat, trie = catalogue(params, items, sids)
    runtime = runtime_for(cfg.device, cfg.threads, cfg.precision, False)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model: PreTrainedModel = load_lm(model_dir, runtime.device)
    code_ids = code_token_ids(tokenizer, sid_tokens(trie.vocab))
    tables = DecodingTables.from_numpy(trie.children)
    prompt = thinking_prompt if cfg.infer.mode == "thinking" else next_sid_prompt
    think_tokens = cfg.infer.max_think_tokens if cfg.infer.mode == "thinking" else 0
    started, n_users = time.time(), 0
    predictions.mkdir(parents=True, exist_ok=True)
    for split, path in (("valid", valid), ("test", test)):
        users, hist, _ = load_eval(str(path))  # histories only: targets are read by evaluate
        texts = [prompt(cat, h[-cfg.corpus.history :].tolist()) for h in hist]
        ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
        got, scores = decode_lists(
            model,
            tokenizer,
            ids,
            code_ids,
            tables,
            cfg.infer.beam,
            inf.top_k,
            cfg.infer.batch_size,
            runtime,
            think_tokens,
        )
        write_predictions(predictions / f"{split}.parquet", users, got, scores)
        n_users += len(users)
    seconds = time.time() - started
    summary = {
        "users": n_users,
        "inference_users_per_s": round(n_users / max(seconds, 1e-9), 1),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    write_json(summary, metrics)
    return StageResult(
        metrics=summary,
        tags={"model": "sidreasoner", "mode": cfg.infer.mode, "beam": cfg.infer.beam, "device": str(runtime.device)},
        summary=f"{n_users:,} users in {cfg.infer.mode} mode, {summary['inference_users_per_s']:.0f} users/s "
        f"(beam {cfg.infer.beam}) on {runtime.device}",
    )
