"""A teacher LLM behind any OpenAI-compatible chat endpoint (a local vLLM or Ollama server), cached on disk.

The paper's item paragraphs and reasoning paths were written by a stronger LLM (SIDREASONER.md §3).
:class:`ChatTeacher` asks an endpoint for the same texts and holds them to the rules the templates
follow by construction:

- an item paragraph mentions the item only by its SID: the title is replaced by the SID wherever the
  teacher wrote it, and a paragraph that never names the SID is rejected;
- a reasoning text uses SIDs for the history items (their titles are replaced the same way) and never
  names the target: one that writes the target's SID or title is rejected (unless the history itself
  holds the target).

A rejected answer is replaced by the template's text for that sample and counted (``stats``); an
endpoint that cannot be reached or answers with an error fails the stage, naming the URL and the
status. Answers are cached by a hash of (model, messages, temperature, max_tokens): a re-run, or a
second project pointing at the same cache, sends nothing for a text it already has; the cache holds
the raw answer, so a change of the post-processing needs no new requests.

Example (an Ollama server on this machine): ``teacher: {kind: openai, base_url: http://127.0.0.1:11434/v1,
model: qwen3:8b, ...}``. The URL is the API root; ``/chat/completions`` is appended.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from tqdm.auto import tqdm

from s2gr_core.config.sidreasoner import TeacherConfig
from s2gr_core.io import atomic_path
from s2gr_core.models.sidreasoner.corpus import Catalogue, Sample, TemplateTeacher, item_paragraph, reasoning
from s2gr_core.models.sidreasoner.tokens import END_THINK, THINK

Messages = list[dict[str, str]]
SYSTEM = "You write training texts for a recommender that names items by identifiers such as <a_1><b_2><c_3>."
RETRY_STATUS = {408, 429, 500, 502, 503, 504}
THINK_BLOCK = re.compile(rf"{re.escape(THINK)}.*?{re.escape(END_THINK)}", re.DOTALL)


class TeacherError(RuntimeError):
    """The endpoint could not be reached, or answered with an error (the message names the URL)."""


def _fields(cat: Catalogue, item: int) -> str:
    parts = [f"title: {cat.title[item]}"]
    if cat.brand[item]:
        parts.append(f"brand: {cat.brand[item]}")
    if cat.categories[item]:
        parts.append(f"categories: {', '.join(cat.categories[item])}")
    if cat.price[item] == cat.price[item]:  # not NaN
        parts.append(f"price: ${cat.price[item]:.2f}")
    if cat.year[item] == cat.year[item]:
        parts.append(f"year: {int(cat.year[item])}")
    return "; ".join(parts)


def paragraph_messages(cat: Catalogue, item: int) -> Messages:
    sid = cat.sid[item]
    user = (
        f"A {cat.noun} with the identifier {sid} ({_fields(cat, item)}).\n"
        "First write a short analysis (what it is, its uses, its audience, key features, keywords) after "
        "'Analysis:'. Then, after 'Paragraph:', write one long paragraph about it that refers to it only as "
        f"{sid}, never by its title."
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def reasoning_messages(cat: Catalogue, history: Sequence[int], target: int) -> Messages:
    lines = "\n".join(f"- {cat.sid[i]}: {_fields(cat, i)}" for i in history)
    user = (
        f"A user chose these {cat.noun}s, oldest first:\n{lines}\n"
        f"The {cat.noun} they chose next (for you only; never name it, its title or its identifier): "
        f"{_fields(cat, target)}.\n"
        "Write a short first-person reasoning, step by step, about what this user is interested in and what "
        f"kind of {cat.noun} should come next. Refer to the history items only by their identifiers. "
        "Reply with the reasoning only."
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def _with_sids(text: str, cat: Catalogue, items: Sequence[int]) -> str:
    """``text`` with every title of ``items`` (longest first, case-insensitive, as a whole phrase) replaced by
    that item's SID: an item mention in a teacher's text becomes the SID."""
    for item in sorted(set(items), key=lambda i: -len(cat.title[i])):
        title = cat.title[item].strip()
        if title:
            text = re.sub(rf"(?<!\w){re.escape(title)}(?!\w)", cat.sid[item], text, flags=re.IGNORECASE)
    return text


def clean(answer: str) -> str:
    """The answer without a reasoning model's own think block, on one line of plain text."""
    return " ".join(THINK_BLOCK.sub(" ", answer).replace(THINK, " ").replace(END_THINK, " ").split())


def paragraph_from(answer: str, cat: Catalogue, item: int) -> str | None:
    """The paragraph of a teacher's answer with the SID for the item, or None when it never names the SID."""
    text = clean(answer)
    text = text.split("Paragraph:", 1)[1].strip() if "Paragraph:" in text else text
    text = _with_sids(text, cat, [item])
    return text if cat.sid[item] in text else None


def reasoning_from(answer: str, cat: Catalogue, history: Sequence[int], target: int) -> str | None:
    """The reasoning with SIDs for the history items, or None when it names the target (not in the history)."""
    text = _with_sids(clean(answer), cat, history)
    if target in history:
        return text or None
    title = cat.title[target].strip()
    named = cat.sid[target] in text or (
        len(title) >= 4 and re.search(rf"(?<!\w){re.escape(title)}(?!\w)", text, flags=re.IGNORECASE)
    )
    return None if named or not text else text


class ChatTeacher:
    """Item paragraphs and reasoning texts from an OpenAI-compatible ``/chat/completions`` endpoint.

    ``stats`` counts ``requests`` (sent), ``cached`` (answered from the cache) and ``rejected`` (answers
    replaced by the template's text) over the life of the teacher.
    """

    def __init__(self, cfg: TeacherConfig, cache_dir: Path, progress: bool = True) -> None:
        self.cfg, self.cache_dir, self.progress = cfg, cache_dir, progress
        self.stats: Counter[str] = Counter()
        self.url = cfg.base_url.rstrip("/") + "/chat/completions"
        key = os.environ.get(cfg.api_key_env, "") if cfg.api_key_env else ""
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}

    def paragraphs(self, cat: Catalogue, items: Sequence[int]) -> list[str]:
        answers = self._ask([paragraph_messages(cat, i) for i in items], "teacher: item paragraphs")
        return [
            self._or_template(paragraph_from(a, cat, i), item_paragraph, cat, i)
            for a, i in zip(answers, items, strict=True)
        ]

    def reasonings(self, cat: Catalogue, samples: Sequence[Sample]) -> list[str]:
        answers = self._ask([reasoning_messages(cat, h, t) for _, h, t in samples], "teacher: reasoning")
        return [
            self._or_template(reasoning_from(a, cat, h, t), reasoning, cat, h)
            for a, (_, h, t) in zip(answers, samples, strict=True)
        ]

    def _or_template(self, text: str | None, template, cat: Catalogue, arg) -> str:
        if text is not None:
            return text
        self.stats["rejected"] += 1
        return template(cat, arg)

    def _body(self, messages: Messages) -> dict:
        """The request, and what the cache is keyed by."""
        cfg = self.cfg
        return {"model": cfg.model, "messages": messages, "temperature": cfg.temperature, "max_tokens": cfg.max_tokens}

    def _key(self, messages: Messages) -> str:
        return hashlib.sha256(json.dumps(self._body(messages), sort_keys=True).encode()).hexdigest()

    def _ask(self, requests: list[Messages], desc: str) -> list[str]:
        """One answer per request, from the cache where it has one, else from the endpoint (``concurrency``
        requests in flight), each answer cached as soon as it arrives."""
        keys = [self._key(m) for m in requests]
        answers: dict[str, str] = {}
        missing: dict[str, Messages] = {}
        for key, messages in zip(keys, requests, strict=True):
            cached = self._cached(key)
            if cached is not None:
                answers[key] = cached
            else:
                missing.setdefault(key, messages)
        self.stats["cached"] += len(requests) - len(missing)
        if missing:
            bar = tqdm(total=len(missing), desc=desc, unit="text", disable=not self.progress, mininterval=1.0)
            client = httpx.Client(timeout=self.cfg.timeout_s, headers=self.headers)
            with client, bar, ThreadPoolExecutor(self.cfg.concurrency) as pool:
                asked = pool.map(lambda m: self._post(client, m), missing.values())
                for key, answer in zip(missing, asked, strict=True):
                    self._store(key, answer)  # at once: a failure later keeps what came before
                    answers[key] = answer
                    bar.update()
            self.stats["requests"] += len(missing)
        return [answers[k] for k in keys]

    def _post(self, client: httpx.Client, messages: Messages) -> str:
        cfg, body = self.cfg, self._body(messages)
        problem = ""
        for attempt in range(cfg.retries + 1):
            if attempt:
                time.sleep(min(2.0**attempt, 30.0))
            try:
                response = client.post(self.url, json=body)
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
                continue
            if response.status_code in RETRY_STATUS:
                problem = f"HTTP {response.status_code}: {response.text[:200]}"
                continue
            if response.status_code != 200:
                raise TeacherError(f"{self.url}: HTTP {response.status_code}: {response.text[:300]}")
            try:
                return str(response.json()["choices"][0]["message"]["content"] or "")
            except (ValueError, KeyError, IndexError, TypeError):
                raise TeacherError(f"{self.url}: not a chat completion: {response.text[:300]}") from None
        raise TeacherError(f"{self.url}: no answer after {cfg.retries + 1} tries ({problem})")

    def _path(self, key: str) -> Path:
        return self.cache_dir / key[:2] / f"{key}.json"

    def _cached(self, key: str) -> str | None:
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            return str(json.loads(path.read_text(encoding="utf-8"))["answer"])
        except (ValueError, KeyError):  # a damaged entry is asked again and overwritten
            return None

    def _store(self, key: str, answer: str) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps({"model": self.cfg.model, "answer": answer}), encoding="utf-8")


def make_teacher(cfg: TeacherConfig, progress: bool = True) -> TemplateTeacher | ChatTeacher:
    """The configured teacher; a relative cache directory is the working directory's (the project root's
    when DVC runs the stage), as for ``model.base_model``."""
    return TemplateTeacher() if cfg.kind == "templates" else ChatTeacher(cfg, Path(cfg.cache_dir), progress)
