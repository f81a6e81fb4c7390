"""Trie-constrained rollouts: every sampled completion ends in ``</think>``, the blank line, a real
item's SID and the end-of-turn token (the ``grpo.constrained`` switch).

The thoughts are sampled freely, except that the end-of-turn token is held back until the answer is
written and ``</think>`` is forced once only the answer's tokens still fit in the completion budget.
After ``</think>`` the blank line is forced, then each code is sampled among the codes the decoding
tables allow after the codes already written (the same tables the beam search uses), then the
end-of-turn token. One vectorised mask per generation step covers every rollout: the trie state of a
row is re-read from its own tokens, so no per-row Python state exists and nothing depends on the
order rows are sampled in.

Unconstrained rollouts (the default, as in the paper) earn nothing for an unfinished or invalid
answer; with a small model that rarely writes the format this leaves every group with the same
reward and GRPO with no gradient. Constrained rollouts always earn the validity bonus, so the spread
within a group comes from how many leading codes match. The policy's log-probabilities in the GRPO
loss are still the model's unconstrained ones (TRL recomputes them from the logits).

Worked example (gap = 1 token ``\\n\\n``, 2-code SIDs ``<a_0><b_1>`` and ``<a_1><b_0>``): a row that
has written ``…</think>\\n\\n<a_1>`` may only sample ``<b_0>`` next, and after it only the end-of-turn
token; a row still thinking when ``max_new - 1 - 1 - 2 - 1`` tokens are written must write ``</think>``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import LogitsProcessor, LogitsProcessorList, PreTrainedModel, PreTrainedTokenizerBase

from s2gr_core.models.gr.beam import DecodingTables
from s2gr_core.models.sidreasoner.tokens import END_THINK

GAP = "\n\n"  # what a trained answer puts between </think> and its SID


def gap_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The token ids of the blank line between ``</think>`` and the SID."""
    return tokenizer(GAP, add_special_tokens=False)["input_ids"]


@dataclass(frozen=True, slots=True)
class AnswerFormat:
    """The token ids of a well-formed answer and the tables of real SIDs.

    ``code_ids[p]`` (V_p,) is the token id of each code at position p; ``tables`` the ``sids`` stage's
    trie (``tables.children[p][state, code]`` -> next state, or -1 where no real item continues).
    """

    end_think: int
    gap: tuple[int, ...]
    code_ids: tuple[torch.Tensor, ...]
    tables: DecodingTables
    eos: int

    @classmethod
    def build(cls, tokenizer: PreTrainedTokenizerBase, code_ids: Sequence, tables: DecodingTables) -> AnswerFormat:
        return cls(
            end_think=tokenizer.convert_tokens_to_ids(END_THINK),
            gap=tuple(gap_ids(tokenizer)),
            code_ids=tuple(torch.as_tensor(c, dtype=torch.int64) for c in code_ids),
            tables=tables,
            eos=tokenizer.eos_token_id,
        )

    @property
    def answer_tokens(self) -> int:
        """Tokens from ``</think>`` to the end-of-turn token, both included."""
        return 1 + len(self.gap) + len(self.code_ids) + 1

    def processor(self, prompt_len: int, max_new: int) -> AnswerConstraint:
        if max_new <= self.answer_tokens:
            raise ValueError(
                f"grpo.max_completion_tokens = {max_new} leaves no room to think: a constrained rollout needs "
                f"{self.answer_tokens} tokens for </think>, the blank line, the SID and the end of turn"
            )
        return AnswerConstraint(self, prompt_len, max_new - self.answer_tokens)


class AnswerConstraint(LogitsProcessor):
    """Masks ``scores`` (B, V) so the completion after the first ``prompt_len`` columns follows
    :class:`AnswerFormat`; ``think_budget`` = how many tokens may be written before ``</think>``."""

    def __init__(self, fmt: AnswerFormat, prompt_len: int, think_budget: int):
        self.fmt, self.prompt_len, self.budget = fmt, prompt_len, think_budget
        self._on: torch.device | None = None

    def _to(self, device: torch.device, vocab: int) -> None:
        if self._on != device:
            f = self.fmt
            self.codes = [c.to(device) for c in f.code_ids]
            self.tables = f.tables.to(device).children
            # token id -> code at position p (-1 for any other token): reads a row's written SID back
            self.code_of = [torch.full((vocab,), -1, dtype=torch.int64, device=device) for _ in self.codes]
            for lookup, ids in zip(self.code_of, self.codes, strict=True):
                lookup[ids] = torch.arange(len(ids), device=device)
            self._on = device

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self._to(scores.device, scores.shape[-1])
        f, written = self.fmt, input_ids[:, self.prompt_len :]  # (B, n)
        batch, n = written.shape
        rows = torch.arange(batch, device=scores.device)
        # one column past the written ones: reductions and reads stay defined before the first token
        padded = torch.nn.functional.pad(written, (0, 1), value=-1)
        ended = padded == f.end_think
        closed = ended.any(1)
        first = torch.where(closed, ended.int().argmax(1), torch.full_like(rows, n))
        after = torch.where(closed, n - 1 - first, torch.full_like(rows, -1))  # tokens since </think>

        allowed = torch.zeros_like(scores, dtype=torch.bool)
        thinking = ~closed & (n < self.budget)
        allowed[thinking] = True
        allowed[thinking, f.eos] = False  # no end of turn before the answer
        allowed[~closed & (n >= self.budget), f.end_think] = True
        for k, token in enumerate(f.gap):
            allowed[closed & (after == k), token] = True
        state = torch.zeros_like(rows)
        for p, ids in enumerate(self.codes):
            at = len(f.gap) + p
            choosing = (closed & (after == at)).nonzero()[:, 0]
            allowed[choosing[:, None], ids[None, :]] = self.tables[p][state[choosing]] >= 0
            if p + 1 < len(self.codes):  # walk the trie through the code this row wrote at p
                token = padded.gather(1, (first + 1 + at).clamp(max=n)[:, None])[:, 0]
                code = torch.where(closed & (after > at), self.code_of[p][token], -1)
                step = self.tables[p][state, code.clamp(min=0)]
                state = torch.where((code >= 0) & (step >= 0), step, state)
        allowed[closed & (after >= len(f.gap) + len(self.codes)), f.eos] = True
        return scores.masked_fill(~allowed, float("-inf"))


def constrain_generate(model: PreTrainedModel, fmt: AnswerFormat) -> None:
    """Make every later ``model.generate`` call apply :class:`AnswerConstraint` to its completions.

    TRL's ``GRPOTrainer`` calls ``generate`` with a generation config and no hook for a logits
    processor, so the constraint goes on the model instance: each call builds one processor for its
    own prompt width and ``max_new_tokens``.
    """
    generate = model.generate

    @functools.wraps(generate)
    def constrained(*args, input_ids: torch.Tensor, generation_config=None, logits_processor=None, **kwargs):
        max_new = kwargs.get("max_new_tokens") or (generation_config or model.generation_config).max_new_tokens
        if max_new is None:
            raise ValueError("constrained generation needs max_new_tokens: the answer is forced within it")
        processors = LogitsProcessorList([*(logits_processor or []), fmt.processor(input_ids.shape[1], max_new)])
        return generate(
            *args, input_ids=input_ids, generation_config=generation_config, logits_processor=processors, **kwargs
        )

    model.generate = constrained
