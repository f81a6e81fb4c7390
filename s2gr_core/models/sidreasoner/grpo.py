"""Stage 3: GRPO with the outcome reward, on TRL's ``GRPOTrainer`` (SIDREASONER.md §5).

The policy and the KL reference both load from the stage-2 directory (TRL builds its reference from
the policy's path when ``beta`` > 0, so the stage-2 model must be on disk first). Rollouts are sampled
without constraints by default (an invalid SID earns no validity bonus), or end in a real item's SID
with ``constrained`` (:mod:`~s2gr_core.models.sidreasoner.constrain`); TRL decodes them with special tokens
skipped, which keeps ``<think>``/``</think>`` and the SID codes (ordinary added tokens). Advantages are
normalised per group of ``num_generations`` rollouts; the loss is the token mean over the batch
(TRL's ``dapo``), with the k3 KL estimator to the reference as a loss term.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from transformers import PreTrainedTokenizerBase, TrainerCallback

from s2gr_core.config.sidreasoner import GRPOPhaseConfig
from s2gr_core.models.sidreasoner.constrain import AnswerFormat, constrain_generate
from s2gr_core.models.sidreasoner.reward import answer_codes, sid_reward
from s2gr_core.models.sidreasoner.tokens import ANGLE_TOKEN

FINGERPRINT = "fingerprint.json"


class SidReward:
    """TRL reward function: :func:`sid_reward` of every rollout against its prompt's target SID, and the
    share of rollouts whose answer is a real item's SID (logged as ``valid_sid_share``)."""

    __name__ = "sid_reward"

    def __init__(self, valid_sids: frozenset[str], codes: int):
        self.valid, self.codes = valid_sids, codes

    def __call__(self, prompts: list[str], completions: list[str], target_sid: list[str], **kwargs: Any) -> list[float]:
        answers = [answer_codes(c, self.codes) for c in completions]
        valid = [a is not None and "".join(a) in self.valid for a in answers]
        if (log_metric := kwargs.get("log_metric")) is not None:
            log_metric("valid_sid_share", float(np.mean(valid)))
        return [sid_reward(c, t, self.valid) for c, t in zip(completions, target_sid, strict=True)]


class ReportMetrics(TrainerCallback):
    """Every numeric value the trainer logs (reward mean/std, KL, loss, valid SID share) to ``log``, per step."""

    def __init__(self, log: Callable[[dict[str, float], int], None]):
        self.log = log

    def on_log(self, args, state, control, logs=None, **kwargs):
        numeric = {k.replace("/", "_"): float(v) for k, v in (logs or {}).items() if isinstance(v, int | float)}
        if numeric:
            self.log(numeric, int(state.global_step))


def fingerprint(cfg: GRPOPhaseConfig, start: str, prompts: list[str], targets: list[str], seed: int) -> str:
    """Identity of a GRPO run: settings, starting weights, prompts and targets, seed."""
    digest = hashlib.sha256(json.dumps([asdict(cfg), start, seed], sort_keys=True).encode())
    for p, t in zip(prompts, targets, strict=True):
        digest.update(f"{p}\x00{t}\x01".encode())
    return digest.hexdigest()[:16]


def resumable(resume_dir: Path, identity: str) -> bool:
    """Whether ``resume_dir`` holds a checkpoint of this very run; a stale one (other settings or data) is
    removed, so a run never resumes from somebody else's state."""
    marker = resume_dir / FINGERPRINT
    same = marker.is_file() and json.loads(marker.read_text()).get("fingerprint") == identity
    if not same and resume_dir.exists():
        shutil.rmtree(resume_dir)
    resume_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"fingerprint": identity}))
    return same and any(resume_dir.glob("checkpoint-*"))


def train_grpo(
    start_dir: Path,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    targets: list[str],
    valid_sids: frozenset[str],
    cfg: GRPOPhaseConfig,
    *,
    seed: int,
    device: str,
    bf16: bool,
    resume_dir: Path,
    start: str,
    log: Callable[[dict[str, float], int], None] | None = None,
    answer: AnswerFormat | None = None,
):
    """GRPO from the stage-2 model in ``start_dir`` -> the trainer after training (its model holds the policy).

    ``targets[i]`` is the SID string of prompt i's next item; checkpoints go to ``resume_dir`` every few
    steps, and a killed run resumes from the last of them. ``answer`` (required when ``cfg.constrained``)
    says what a constrained rollout must end with.
    """
    if cfg.constrained and answer is None:
        raise ValueError("grpo.constrained is true but no answer format (SID tables) was given")
    from datasets import Dataset  # imported here: only this phase needs datasets and TRL
    from trl import GRPOConfig, GRPOTrainer

    group = cfg.prompts_per_step * cfg.num_generations
    steps = cfg.epochs * -(-len(prompts) // cfg.prompts_per_step)
    args = GRPOConfig(
        output_dir=str(resume_dir),
        learning_rate=cfg.lr,
        lr_scheduler_type="constant",
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=group,
        gradient_accumulation_steps=1,
        num_generations=cfg.num_generations,
        max_completion_length=cfg.max_completion_tokens,
        temperature=cfg.temperature,
        top_p=1.0,
        beta=cfg.beta,
        epsilon=cfg.epsilon,
        loss_type="dapo",
        scale_rewards="group",
        num_iterations=1,
        logging_steps=1,
        save_strategy="steps",
        save_steps=max(1, steps // 4),
        save_total_limit=1,
        report_to="none",
        seed=seed,
        data_seed=seed,
        use_cpu=device == "cpu",
        bf16=bf16,
        dataloader_num_workers=0,
    )
    dataset = Dataset.from_dict({"prompt": prompts, "target_sid": targets})
    codes = len(ANGLE_TOKEN.findall(targets[0])) if targets else 0
    trainer = GRPOTrainer(
        model=str(start_dir),
        reward_funcs=[SidReward(valid_sids, codes)],
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[ReportMetrics(log)] if log is not None else None,
    )
    if cfg.constrained:
        constrain_generate(trainer.model, answer)
    identity = fingerprint(cfg, start, prompts, targets, seed)
    trainer.train(resume_from_checkpoint=True if resumable(resume_dir, identity) else None)
    return trainer
