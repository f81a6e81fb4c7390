"""Top-K lists from the LM with the project's constrained beam search (``models/gr/beam.py``).

The SID tokens are the ``sids`` stage's codes, so the same search that decodes TIGER and S2GR drives
the LM: ``step`` runs the prompt once per user (its key/value cache is then fanned out to the beams)
and one token per beam per position after that, and returns the log-probability of each code of the
position, i.e. the LM's full-vocabulary log-softmax read at that position's code tokens. The
decoding tables mask every prefix no real item continues, so there is no per-beam callback (the
``prefix_allowed_tokens_fn`` of the public code). Lists rank items by the SID's log-probability;
the end-of-turn token after it is not scored.

Thinking mode first writes one greedy reasoning trace per user, cut at ``</think>``, and decodes the
SID after it, so every item in a user's list shares that trace.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from s2gr_core.models.gr.beam import DecodingTables, beam_search
from s2gr_core.models.runtime import Runtime
from s2gr_core.models.sidreasoner.constrain import gap_ids
from s2gr_core.models.sidreasoner.reward import answer_codes
from s2gr_core.models.sidreasoner.tokens import END_THINK


def left_pad(ids: list[list[int]], pad: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) ids and mask, padded on the left so every prompt ends at the last column.

    >>> x, m = left_pad([[5, 6], [7]], 0, torch.device("cpu"))
    >>> x.tolist(), m.tolist()
    ([[5, 6], [0, 7]], [[1, 1], [0, 1]])
    """
    width = max(len(s) for s in ids)
    x = torch.full((len(ids), width), pad, dtype=torch.int64)
    for row, s in enumerate(ids):
        x[row, width - len(s) :] = torch.as_tensor(s, dtype=torch.int64)
    mask = (torch.arange(width)[None] >= width - torch.as_tensor([len(s) for s in ids])[:, None]).long()
    return x.to(device), mask.to(device)


def make_step(model: PreTrainedModel, code_ids: list[torch.Tensor]):
    """The beam-search step of an LM whose code tokens at position p are ``code_ids[p]`` (V_p,)."""

    def step(position: int, last: torch.Tensor, cache: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        if position == 0:  # the prompts: one row per user
            x, mask = cache["prompt"], cache["mask"]
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
        else:  # the code chosen at the previous position, one row per beam
            x = code_ids[position - 1][last][:, None]
            mask = torch.cat([cache["mask"], torch.ones_like(cache["mask"][:, :1])], dim=1)
            positions = cache["next"][:, None]
        out = model(
            input_ids=x, attention_mask=mask, position_ids=positions, past_key_values=cache["kv"], use_cache=True
        )
        logp = F.log_softmax(out.logits[:, -1].float(), dim=-1)
        cache = {"kv": out.past_key_values, "mask": mask, "next": positions[:, -1] + 1}
        return logp[:, code_ids[position]], cache

    return step


def reorder(cache: dict[str, Any], parent: torch.Tensor) -> dict[str, Any]:
    """Row i of the new cache is row parent[i] of the old one (users fan out to beams at the first call)."""
    cache["kv"].reorder_cache(parent)
    return {
        "kv": cache["kv"],
        "mask": cache["mask"].index_select(0, parent),
        "next": cache["next"].index_select(0, parent),
    }


@torch.no_grad()
def constrained_topk(
    model: PreTrainedModel,
    prompts: list[list[int]],
    code_ids: list[torch.Tensor],
    tables: DecodingTables,
    beam: int,
    pad: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompt ids per user -> the ``beam`` best real items (B, W) and their SID log-probabilities, best first."""
    device = tables.children[0].device
    x, mask = left_pad(prompts, pad, device)
    cache = {"prompt": x, "mask": mask, "kv": None}
    return beam_search(make_step(model, code_ids), reorder, cache, tables, len(prompts), beam)


def continue_greedily(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[list[int]],
    max_tokens: int,
    stop: int | list[int],
) -> torch.Tensor:
    """(B, <= max_tokens) greedy continuation of every prompt (left-padded together), ``do_sample=False``
    explicitly: a model directory's generation config never turns this into sampling."""
    x, mask = left_pad(prompts, tokenizer.pad_token_id, next(model.parameters()).device)
    out = model.generate(
        input_ids=x,
        attention_mask=mask,
        do_sample=False,
        num_beams=1,
        max_new_tokens=max_tokens,
        eos_token_id=stop,
        pad_token_id=tokenizer.pad_token_id,
    )
    return out[:, x.shape[1] :]


@torch.no_grad()
def think(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[list[int]],
    max_tokens: int,
) -> list[list[int]]:
    """Each prompt followed by its greedy reasoning trace up to and including ``</think>`` (added where the
    trace runs out of tokens), then the blank line a trained answer puts before its SID."""
    end = tokenizer.convert_tokens_to_ids(END_THINK)
    out = continue_greedily(model, tokenizer, prompts, max_tokens, [end, tokenizer.eos_token_id]).cpu().numpy()
    ended = out == end
    cut = np.where(ended.any(1), ended.argmax(1), out.shape[1])  # index of the first </think>, or the end
    gap = gap_ids(tokenizer)
    return [[*p, *out[row, : cut[row]].tolist(), end, *gap] for row, p in enumerate(prompts)]


@torch.no_grad()
def greedy_is_real(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[list[int]],
    valid_sids: frozenset[str],
    codes: int,
) -> np.ndarray:
    """(B,) whether the LM's own greedy answer, unconstrained, is a real item's SID: its first ``codes``
    angle-bracket tokens after the prompt (which ends where the SID begins)."""
    out = continue_greedily(model, tokenizer, prompts, codes + 1, tokenizer.eos_token_id)
    answers = [answer_codes(END_THINK + text, codes) for text in tokenizer.batch_decode(out, skip_special_tokens=True)]
    return np.array([a is not None and "".join(a) in valid_sids for a in answers])


@dataclass(slots=True)
class Decoded:
    items: np.ndarray  # (U, top_k) item ids, best first
    scores: np.ndarray  # (U, top_k) SID log-probabilities
    real: np.ndarray | None  # (U,) whether the unconstrained greedy answer was a real item (when asked)


def decode_lists(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[list[int]],
    code_ids: list[np.ndarray],
    tables: DecodingTables,
    beam: int,
    top_k: int,
    batch: int,
    runtime: Runtime,
    think_tokens: int = 0,
    valid_sids: frozenset[str] | None = None,
) -> Decoded:
    """Top-``top_k`` items and scores for every prompt, ``batch`` users per call (thinking first when
    ``think_tokens`` > 0); with ``valid_sids``, also whether each user's unconstrained greedy answer (after
    the same trace) names a real item: what constraining the search fixes."""
    ids = [torch.as_tensor(c, device=runtime.device) for c in code_ids]
    tables = tables.to(runtime.device)
    model.eval()
    items, scores, real = [], [], []
    for start in range(0, len(prompts), batch):
        chunk = prompts[start : start + batch]
        with runtime.autocast():
            if think_tokens:
                chunk = think(model, tokenizer, chunk, think_tokens)
            got, logp = constrained_topk(model, chunk, ids, tables, beam, tokenizer.pad_token_id)
            if valid_sids is not None:
                real.append(greedy_is_real(model, tokenizer, chunk, valid_sids, len(code_ids)))
        items.append(got[:, :top_k].cpu().numpy())
        scores.append(logp[:, :top_k].float().cpu().numpy())
    return Decoded(np.concatenate(items), np.concatenate(scores), np.concatenate(real) if real else None)
