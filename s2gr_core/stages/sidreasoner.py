"""SIDReasoner stages: the task corpus and tokenizer, stage-1 alignment SFT, stage-2 reasoning SFT,
and the constrained decoding of top-K lists (the common prediction format)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from s2gr_core.config import Params
from s2gr_core.evaluation.predictions import write_predictions
from s2gr_core.io import atomic_path, md5_file, write_json, write_parquet
from s2gr_core.models.common import peak_memory_mb
from s2gr_core.models.gr.beam import DecodingTables
from s2gr_core.models.runtime import runtime_for
from s2gr_core.models.sidreasoner.constrain import AnswerFormat
from s2gr_core.models.sidreasoner.corpus import Catalogue, build_corpus, next_sid_prompt, thinking_prompt
from s2gr_core.models.sidreasoner.decode import decode_lists
from s2gr_core.models.sidreasoner.grpo import train_grpo
from s2gr_core.models.sidreasoner.model import build_model, greedy, load_lm
from s2gr_core.models.sidreasoner.sft import train_phase
from s2gr_core.models.sidreasoner.teacher import TeacherError, make_teacher
from s2gr_core.models.sidreasoner.tokenizer import build_tokenizer, code_token_ids, encode
from s2gr_core.models.sidreasoner.tokens import ANGLE_TOKEN, sid_texts, sid_tokens
from s2gr_core.models.training import TIMINGS
from s2gr_core.semantic.sids import SidTrie, load_sids
from s2gr_core.split import load_eval, load_train
from s2gr_core.stages.base import Reporter, StageFailed, StageResult
from s2gr_core.stages.models import catalogue_size, rank_done

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
    teacher = make_teacher(cfg.teacher)
    try:
        frame = build_corpus(cat, users, sequences, cfg.corpus, cfg.seed, teacher)
    except TeacherError as exc:
        raise StageFailed(f"sidreasoner.teacher: {exc}; the cache keeps every answer received so far") from exc
    teacher_counts = {f"teacher_{k}": int(v) for k, v in sorted(getattr(teacher, "stats", {}).items())}
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
        **teacher_counts,
    }
    write_json(summary, metrics)
    return StageResult(
        metrics=summary,
        tags={"base_model": cfg.model.base_model or "built", "teacher": cfg.teacher.model or cfg.teacher.kind},
        summary=(
            f"{len(frame):,} samples over {len(sizes)} tasks ({summary['tokens_mean']:.0f} tokens on average), "
            f"tokenizer of {len(tokenizer):,} tokens"
            + "".join(f", {k.replace('_', ' ')} {v:,}" for k, v in teacher_counts.items())
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
    if (done := rank_done(outcome)) is not None:
        return done
    save_lm(outcome.model, tokenizer, outcome.history, model_dir)
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


def save_lm(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, history: list[dict], model_dir: Path) -> None:
    """The weights and the tokenizer as one Hugging Face directory (what the next phase loads), with the
    history of the run (timings left out, keys sorted: the directory is the same bytes on every re-run,
    resumed or not); replaced whole, or not at all."""
    greedy(model, tokenizer)
    with atomic_path(model_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        # keys sorted: a resumed run reads its history back from a checkpoint that stored it sorted
        rows = [{k: row[k] for k in sorted(row) if k not in TIMINGS} for row in history]
        write_json(rows, tmp / "history.json")


# what the GRPO trainer logs that varies from run to run with the machine, not with the training
GRPO_TIMINGS = ("train_runtime", "train_samples_per_second", "train_steps_per_second", "step_time", "epoch_seconds")


def grpo_stage(
    params: Params,
    *,
    start_dir: Path,
    corpus: Path,
    items: Path,
    sids: Path,
    model_dir: Path,
    metrics: Path,
    resume_dir: Path,
    reporter: Reporter,
) -> StageResult:
    """Stage 3: GRPO of the stage-2 model on training prompts, rewarded by :func:`sid_reward`."""
    cfg = params.sidreasoner
    cat, trie = catalogue(params, items, sids)
    runtime = runtime_for(cfg.device, cfg.threads, cfg.precision, False)
    tokenizer = AutoTokenizer.from_pretrained(start_dir, local_files_only=True)
    answer = None
    if cfg.grpo.constrained:
        code_ids = code_token_ids(tokenizer, sid_tokens(trie.vocab))
        answer = AnswerFormat.build(tokenizer, code_ids, DecodingTables.from_numpy(trie.children))
        try:
            answer.processor(0, cfg.grpo.max_completion_tokens)
        except ValueError as exc:
            raise StageFailed(f"sidreasoner.{exc}") from exc
    frame = pd.read_parquet(corpus / CORPUS)
    frame = frame[frame["phase"] == "reason"]
    if frame.empty:
        raise StageFailed(f"{corpus / CORPUS}: no stage-2 prompts to train GRPO on; check sidreasoner.corpus")
    rng = np.random.default_rng(cfg.seed)
    take = np.arange(len(frame)) if not cfg.grpo.prompts else rng.permutation(len(frame))[: cfg.grpo.prompts]
    rows = frame.iloc[np.sort(take)]
    targets = [cat.sid[i] for i in rows["item_id"]]
    started = time.time()
    trainer = train_grpo(
        start_dir,
        tokenizer,
        rows["prompt"].tolist(),
        targets,
        frozenset(cat.sid),
        cfg.grpo,
        seed=cfg.seed,
        device=runtime.device.type,
        bf16=runtime.precision == "bf16",
        resume_dir=resume_dir,
        start=md5_file(start_dir / "model.safetensors"),
        log=reporter.log_metrics,
        answer=answer,
    )
    steps = [row for row in trainer.state.log_history if "reward" in row]
    history = [
        {"step": row["step"], **{k.replace("/", "_"): v for k, v in row.items() if k != "step"}} for row in steps
    ]
    save_lm(
        trainer.model, tokenizer, [{k: v for k, v in r.items() if k not in GRPO_TIMINGS} for r in history], model_dir
    )
    rewards = [row["reward"] for row in steps]
    valid = [row.get("valid_sid_share", np.nan) for row in steps]
    summary = {
        "steps": len(steps),
        "prompts": len(rows),
        "reward_first": round(float(rewards[0]), 6) if rewards else float("nan"),
        "reward_last": round(float(rewards[-1]), 6) if rewards else float("nan"),
        "reward_mean": round(float(np.mean(rewards)), 6) if rewards else float("nan"),
        "reward_std_mean": round(float(np.mean([row.get("reward_std", np.nan) for row in steps])), 6),
        "valid_sid_share_first": round(float(valid[0]), 6) if valid else float("nan"),
        "valid_sid_share_last": round(float(valid[-1]), 6) if valid else float("nan"),
        "kl_last": round(float(steps[-1].get("kl", np.nan)), 6) if steps else float("nan"),
        "seconds": round(time.time() - started, 1),
    }
    write_json(summary, metrics)
    return StageResult(
        metrics=summary,
        tags={"model": "sidreasoner_grpo", "seed": cfg.seed, "device": str(runtime.device), **runtime.tags()},
        artifacts=[metrics, model_dir / "history.json"],
        summary=(
            f"{summary['steps']} steps over {len(rows)} prompts x {cfg.grpo.num_generations} rollouts: reward "
            f"{summary['reward_first']:.3f} -> {summary['reward_last']:.3f} (mean {summary['reward_mean']:.3f}), "
            f"valid SIDs {summary['valid_sid_share_first']:.0%} -> {summary['valid_sid_share_last']:.0%}, "
            f"KL {summary['kl_last']:.4f}, {summary['seconds']:.0f}s on {runtime.device}"
        ),
    )


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
    started, n_users, real = time.time(), 0, []
    predictions.mkdir(parents=True, exist_ok=True)
    for split, path in (("valid", valid), ("test", test)):
        users, hist, _ = load_eval(str(path))  # histories only: targets are read by evaluate
        texts = [prompt(cat, h[-cfg.corpus.history :].tolist()) for h in hist]
        ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
        out = decode_lists(
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
            frozenset(cat.sid),
        )
        write_predictions(predictions / f"{split}.parquet", users, out.items, out.scores)
        real.append(out.real)
        n_users += len(users)
    seconds = time.time() - started
    summary = {
        "users": n_users,
        # the LM's own greedy answer, unconstrained, names no real item (the lists themselves hold only real items)
        "invalid_share": round(1.0 - float(np.concatenate(real).mean()), 6),
        "inference_users_per_s": round(n_users / max(seconds, 1e-9), 1),
        "peak_memory_mb": round(peak_memory_mb(runtime.device), 1),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    write_json(summary, metrics)
    return StageResult(
        metrics=summary,
        tags={"model": "sidreasoner", "mode": cfg.infer.mode, "beam": cfg.infer.beam, "device": str(runtime.device)},
        summary=f"{n_users:,} users in {cfg.infer.mode} mode, {summary['inference_users_per_s']:.0f} users/s "
        f"(beam {cfg.infer.beam}) on {runtime.device}; unconstrained, {summary['invalid_share']:.1%} of the greedy "
        "answers would name no real item",
    )
