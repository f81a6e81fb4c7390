"""The stage-1 and stage-2 training tasks (SIDREASONER.md §2–4), from the training split only.

The default teacher is a set of deterministic templates: item paragraphs from the item's fields,
and reasoning from what a history shares (its leading categories, a returning brand, the latest
switch). Every item mention in generated text is its SID, and reasoning is built from the history
alone (its function never sees the target), so it cannot name the item it leads to. A
:class:`Teacher` writes those two kinds of text; ``teacher.py`` has one behind an OpenAI-compatible
endpoint, held to the same rules.

One row per sample::

    phase   task          kind  prompt                         response               user_id  item_id
    align   sid_to_sid    chat  <|im_start|>system ... <think>  <a_1><b_4><c_2><d_0>   3        17
    align   item_paragraph lm   ""                             <a_1><b_4>... is a ...  -1       17
    reason  reason        chat  <|im_start|>system ...          <think>\\n...</think>\\n\\n<a_..>  3  17

``chat`` rows train the response only; ``lm`` rows train every token (the tokenizing code applies
the end-of-turn rules per phase).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd

from s2gr_core.config.sidreasoner import CorpusConfig
from s2gr_core.models.sidreasoner.tokens import END_THINK, THINK

SYSTEM = "You are a recommender. Complete the request."
EMPTY_THINK = f"{THINK}\n\n{END_THINK}\n\n"  # a Qwen3 non-thinking answer starts after this block
NOUN = {"ml-100k": "movie", "amazon-beauty": "beauty product"}
TITLE_NEXT = (
    "Here are the {noun}s a user chose, in order: {titles}. What will they choose next? Give the title.",
    "Given the {noun} history {titles}, name the next {noun} the user will pick.",
    "The user has recently enjoyed {titles}. Recommend the next {noun} by title.",
)
COLUMNS = ("phase", "task", "kind", "prompt", "response", "user_id", "item_id")


def chat(user: str) -> str:
    """A one-turn chat up to the assistant's first token, in the Qwen chat markup."""
    return f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"


@dataclass(frozen=True, slots=True)
class Catalogue:
    """What the templates know of every item: SID text, title, and descriptive fields."""

    noun: str
    sid: list[str]  # item id -> SID text
    title: list[str]
    categories: list[list[str]]
    brand: list[str]
    price: list[float]
    year: list[float]

    @classmethod
    def from_items(cls, items: pd.DataFrame, sid_text: list[str], dataset: str) -> Catalogue:
        frame = items.sort_values("item_id")

        def text(v: object) -> str:
            return v.strip() if isinstance(v, str) else ""

        def number(v: object) -> float:
            return float(v) if v is not None and not (isinstance(v, float) and math.isnan(v)) else math.nan

        return cls(
            noun=NOUN.get(dataset, "item"),
            sid=sid_text,
            title=[text(t) or f"item {k}" for t, k in zip(frame["title"], frame["item_key"], strict=True)],
            categories=[[str(c) for c in cats] if cats is not None else [] for cats in frame["categories"]],
            brand=[text(b) for b in frame["brand"]],
            price=[number(p) for p in frame["price"]],
            year=[number(y) for y in frame["year"]],
        )

    def sids(self, items: Sequence[int]) -> str:
        return ", ".join(self.sid[i] for i in items)

    def titles(self, items: Sequence[int]) -> str:
        return ", ".join(f'"{self.title[i]}"' for i in items)


def next_sid_prompt(cat: Catalogue, history: Sequence[int]) -> str:
    """Task 1's prompt (history SIDs -> next SID), non-thinking: it ends with the empty think block."""
    return (
        chat(
            f"A user interacted with these {cat.noun}s in order: {cat.sids(history)}. "
            f"Which {cat.noun} comes next? Answer with its SID."
        )
        + EMPTY_THINK
    )


def thinking_prompt(cat: Catalogue, history: Sequence[int]) -> str:
    """Stage 2's prompt: the model writes ``<think>`` reasoning ``</think>`` and then the SID."""
    return chat(
        f"A user interacted with these {cat.noun}s in order: {cat.sids(history)}. Recommend the next one. "
        "Think step by step first, then answer with the SID only."
    )


def item_paragraph(cat: Catalogue, item: int) -> str:
    """An item described from its fields, mentioned only by its SID."""
    sid, cats = cat.sid[item], cat.categories[item]
    parts = [f"{sid} is a {cat.noun}"]
    if not math.isnan(cat.year[item]):
        parts.append(f" from {int(cat.year[item])}")
    if cat.brand[item]:
        parts.append(f" by {cat.brand[item]}")
    if cats:
        parts.append(f" in {', '.join(cats)}")
    if not math.isnan(cat.price[item]):
        parts.append(f", priced at ${cat.price[item]:.2f}")
    text = "".join(parts) + "."
    if cats:
        text += f" People who like {cats[0]} {cat.noun}s often choose {sid}."
    return text


def reasoning(cat: Catalogue, history: Sequence[int]) -> str:
    """Why a next item follows this history, from the history alone (the target is not an argument)."""
    n = len(history)
    counts = Counter(c for i in history for c in cat.categories[i])
    lines = [f"The user's most recent {cat.noun}s are {cat.sids(history[-3:])}."]
    top = counts.most_common(2)
    if top:
        lead = f"Most of the history is {top[0][0]} ({top[0][1]} of {n})"
        lines.append(lead + (f", then {top[1][0]} ({top[1][1]} of {n})." if len(top) > 1 else "."))
    brands = Counter(cat.brand[i] for i in history if cat.brand[i]).most_common(1)
    if brands and brands[0][1] >= 2:
        lines.append(f"They return to {brands[0][0]} ({brands[0][1]} of {n}).")
    last = history[-1]
    if n >= 2 and cat.categories[last]:
        shared = [c for c in cat.categories[last] if c in cat.categories[history[-2]]]
        if shared:
            lines.append(f"The latest, {cat.sid[last]}, stays with {shared[0]}.")
        elif cat.categories[history[-2]]:
            lines.append(
                f"The latest, {cat.sid[last]}, switches from {cat.categories[history[-2]][0]} "
                f"to {cat.categories[last][0]}."
            )
    if top:
        lines.append(f"So the next {cat.noun} is likely {' or '.join(c for c, _ in top)}.")
    return " ".join(lines)


def reasoning_response(cat: Catalogue, thought: str, target: int) -> str:
    """Stage 2's target: the reasoning in a think block, then the SID."""
    return f"{THINK}\n{thought}\n{END_THINK}\n\n{cat.sid[target]}"


def narrative(cat: Catalogue, history: Sequence[int], thought: str, target: int) -> str:
    """Task 8: the history's SIDs, the reasoning about it, and the next item's SID."""
    return f"A user's history: {cat.sids(history)}. {thought} The next {cat.noun} is {cat.sid[target]}."


Sample = tuple[int, list[int], int]  # (user id, history item ids, target item id)


class Teacher(Protocol):
    """Who writes the texts the paper had a stronger LLM write (SIDREASONER.md §3): item paragraphs that
    name the item by its SID only, and reasoning about a history that never names its target."""

    def paragraphs(self, cat: Catalogue, items: Sequence[int]) -> list[str]: ...

    def reasonings(self, cat: Catalogue, samples: Sequence[Sample]) -> list[str]: ...


class TemplateTeacher:
    """The default teacher: :func:`item_paragraph` and :func:`reasoning`, deterministic, from item fields
    and from what a history shares (the target is not an argument of the reasoning)."""

    def paragraphs(self, cat: Catalogue, items: Sequence[int]) -> list[str]:
        return [item_paragraph(cat, int(i)) for i in items]

    def reasonings(self, cat: Catalogue, samples: Sequence[Sample]) -> list[str]:
        return [reasoning(cat, history) for _, history, _ in samples]


SEQUENTIAL: dict[str, Callable[[Catalogue, list[int], int, np.random.Generator], tuple[str, str, str]]] = {
    # task -> (kind, prompt, response)
    "sid_to_sid": lambda c, h, t, _: ("chat", next_sid_prompt(c, h), c.sid[t]),
    "sid_to_title_next": lambda c, h, t, _: (
        "chat",
        chat(f"A user interacted with these {c.noun}s in order: {c.sids(h)}. What is the title of the next one?")
        + EMPTY_THINK,
        c.title[t],
    ),
    "title_to_title_next": lambda c, h, t, rng: (
        "chat",
        chat(TITLE_NEXT[int(rng.integers(len(TITLE_NEXT)))].format(noun=c.noun, titles=c.titles(h))) + EMPTY_THINK,
        c.title[t],
    ),
    "title_to_sid_next": lambda c, h, t, _: (
        "chat",
        chat(
            f"A user interacted with these {c.noun}s in order: {c.titles(h)}. "
            f"Which {c.noun} comes next? Answer with its SID."
        )
        + EMPTY_THINK,
        c.sid[t],
    ),
}
PER_ITEM: dict[str, Callable[[Catalogue, int], tuple[str, str, str]]] = {
    "title_to_sid": lambda c, i: (
        "chat",
        chat(f'Which SID identifies the {c.noun} "{c.title[i]}"?') + EMPTY_THINK,
        c.sid[i],
    ),
    "sid_to_title": lambda c, i: (
        "chat",
        chat(f"What is the title of the {c.noun} {c.sid[i]}?") + EMPTY_THINK,
        c.title[i],
    ),
}


def training_samples(
    users: np.ndarray, sequences: list[np.ndarray], history: int, limit: int, rng: np.random.Generator
) -> list[Sample]:
    """Every (user, position >= 1) of the training sequences, or ``limit`` of them drawn without replacement:
    the history is the previous ``history`` items, the target the item at the position."""
    lengths = np.array([len(s) for s in sequences])
    owner = np.repeat(np.arange(len(sequences)), np.maximum(lengths - 1, 0))
    position = np.concatenate([np.arange(1, n) for n in lengths]) if len(owner) else np.zeros(0, dtype=np.int64)
    chosen = (
        np.arange(len(owner))
        if not limit or limit >= len(owner)
        else np.sort(rng.choice(len(owner), limit, replace=False))
    )
    out = []
    for k in chosen:
        seq, t = sequences[owner[k]], int(position[k])
        out.append((int(users[owner[k]]), seq[max(0, t - history) : t].tolist(), int(seq[t])))
    return out


def catalogue_sample(n_items: int, limit: int, rng: np.random.Generator) -> list[int]:
    """Every item id, or ``limit`` of them drawn without replacement (sorted): the per-item tasks' items."""
    if not limit or limit >= n_items:
        return list(range(n_items))
    return np.sort(rng.choice(n_items, limit, replace=False)).tolist()


def build_corpus(
    cat: Catalogue,
    users: np.ndarray,
    sequences: list[np.ndarray],
    cfg: CorpusConfig,
    seed: int,
    teacher: Teacher | None = None,
) -> pd.DataFrame:
    """Every enabled stage-1 task and the stage-2 reasoning task, shuffled within each phase; the item
    paragraphs and reasoning texts are ``teacher``'s (default: :class:`TemplateTeacher`)."""
    teacher = teacher or TemplateTeacher()
    rng = np.random.default_rng(seed)
    rows: list[tuple] = []
    for task in cfg.tasks:
        if task == "item_paragraph":
            items = catalogue_sample(len(cat.sid), cfg.max_per_task, rng)
            texts = teacher.paragraphs(cat, items)
            rows += [("align", task, "lm", "", text, -1, i) for i, text in zip(items, texts, strict=True)]
        elif task in PER_ITEM:
            items = catalogue_sample(len(cat.sid), cfg.max_per_task, rng)
            rows += [("align", task, *PER_ITEM[task](cat, i), -1, i) for i in items]
        elif task == "sequence_narrative":
            samples = training_samples(users, sequences, cfg.history, cfg.max_per_task, rng)
            thoughts = teacher.reasonings(cat, samples)
            rows += [
                ("align", task, "lm", "", narrative(cat, h, thought, t), u, t)
                for (u, h, t), thought in zip(samples, thoughts, strict=True)
            ]
        else:
            samples = training_samples(users, sequences, cfg.history, cfg.max_per_task, rng)
            rows += [("align", task, *SEQUENTIAL[task](cat, h, t, rng), u, t) for u, h, t in samples]
    samples = training_samples(users, sequences, cfg.history, cfg.max_reasoning, rng)
    for (user, hist, target), thought in zip(samples, teacher.reasonings(cat, samples), strict=True):
        rows.append(
            (
                "reason",
                "reason",
                "chat",
                thinking_prompt(cat, hist),
                reasoning_response(cat, thought, target),
                user,
                target,
            )
        )
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    order = np.concatenate([rng.permutation(np.flatnonzero(frame["phase"] == p)) for p in ("align", "reason")])
    return frame.iloc[order].reset_index(drop=True)
