"""What SIDReasoner wrote for one user: its reasoning trace with every SID read back as a title, and
the constrained top-K after it (``s2gr explain USER --model sidreasoner``)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from s2gr_core.models.gr.beam import DecodingTables
from s2gr_core.models.runtime import Runtime
from s2gr_core.models.sidreasoner.corpus import Catalogue, next_sid_prompt, thinking_prompt
from s2gr_core.models.sidreasoner.decode import decode_lists, think
from s2gr_core.models.sidreasoner.tokens import ANGLE_TOKEN


def with_titles(text: str, cat: Catalogue) -> str:
    """``text`` with every whole SID followed by its item's title in brackets (or by ``[no such item]``).

    >>> cat = Catalogue("movie", ["<a_1><b_0>", "<a_2><b_1>"], ["Heat", "Up"], [[], []], ["", ""], [0, 0], [0, 0])
    >>> with_titles("after <a_2><b_1>, <a_1><b_1> and <a_1>", cat)
    'after <a_2><b_1> [Up], <a_1><b_1> [no such item] and <a_1>'
    """
    codes = len(ANGLE_TOKEN.findall(cat.sid[0])) if cat.sid else 0
    pattern = re.compile("".join(rf"<{chr(ord('a') + p)}_\d+>" for p in range(codes)))
    index = {sid: item for item, sid in enumerate(cat.sid)}

    def titled(match: re.Match) -> str:
        item = index.get(match.group(0))
        return f"{match.group(0)} [{cat.title[item] if item is not None else 'no such item'}]"

    return pattern.sub(titled, text) if codes else text


@dataclass(slots=True)
class Explanation:
    prompt: str  # the prompt as the model saw it, SIDs titled
    trace: str  # thinking mode: the greedy reasoning up to </think>, SIDs titled; plain mode: ""
    top: np.ndarray  # (top_k,) item ids, best first
    scores: np.ndarray  # (top_k,) SID log-probabilities


@torch.no_grad()
def explain_user(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    cat: Catalogue,
    history: list[int],
    code_ids: list[np.ndarray],
    tables: DecodingTables,
    runtime: Runtime,
    *,
    think_tokens: int,
    beam: int,
    top_k: int,
) -> Explanation:
    """One user's prompt, trace (when ``think_tokens`` > 0) and top-``top_k``: the trace written once, then
    :func:`decode_lists` after it, as ``infer_sidreasoner`` decodes every user."""
    text = (thinking_prompt if think_tokens else next_sid_prompt)(cat, history)
    prompt = tokenizer(text, add_special_tokens=False)["input_ids"]
    full, trace = prompt, ""
    if think_tokens:
        with runtime.autocast():
            full = think(model.eval(), tokenizer, [prompt], think_tokens)[0]
        trace = tokenizer.decode(full[len(prompt) :], skip_special_tokens=True).strip()
    out = decode_lists(model, tokenizer, [full], code_ids, tables, beam, top_k, 1, runtime)
    return Explanation(with_titles(text, cat), with_titles(trace, cat), out.items[0], out.scores[0])
