"""SIDReasoner's pluggable teacher: an OpenAI-compatible endpoint (a real HTTP server on 127.0.0.1) writes
the item paragraphs and reasoning texts, held to the templates' rules, cached on disk."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pandas as pd
import pytest

from s2gr_core.config import Params
from s2gr_core.models.sidreasoner.corpus import Catalogue, TemplateTeacher, build_corpus
from s2gr_core.models.sidreasoner.teacher import ChatTeacher, TeacherError, clean
from s2gr_core.models.sidreasoner.tokens import END_THINK, THINK, sid_texts
from s2gr_core.semantic.sids import load_sids
from s2gr_core.split import load_train

FIELD = re.compile(r"title: (.+?)(?=; [a-z]+: |\)\.\n|\.\n|\n)")


class FakeTeacher(BaseHTTPRequestHandler):
    """``/v1/chat/completions`` that writes from the request: paragraphs name the item by its title (and
    think first, as a reasoning model does); reasoning names the first history item by title. ``mode``:
    'ok', 'leak' (the reasoning names the target's title), 'no-sid' (paragraphs never name the item),
    or an HTTP status to answer with."""

    mode: str = "ok"
    bodies: ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).bodies.append(body)
        if self.mode.isdigit() or self.path != "/v1/chat/completions":
            self._reply(int(self.mode) if self.mode.isdigit() else 404, {"error": "no"})
            return
        asked = body["messages"][-1]["content"]
        titles = FIELD.findall(asked)
        if "Paragraph:" in asked:
            text = (
                "Analysis: useful.\nParagraph: A fine thing."
                if self.mode == "no-sid"
                else (f"{THINK}\nplan\n{END_THINK}\nAnalysis: useful.\nParagraph: {titles[0].upper()} is a fine thing.")
            )
        else:
            text = f"I see {titles[0]} first, so more of the same."
            text += f" Probably {titles[-1]}." if self.mode == "leak" else ""
        self._reply(200, {"choices": [{"message": {"role": "assistant", "content": text}}]})

    def _reply(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    FakeTeacher.mode, FakeTeacher.bodies = "ok", []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeTeacher)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def small(sid_root: Path, params: Params):
    items = pd.read_parquet(sid_root / "data/processed/items.parquet")
    cat = Catalogue.from_items(items, sid_texts(load_sids(sid_root / "data/sids/sids.parquet", len(items))), "ml-100k")
    users, sequences = load_train(str(sid_root / "data/split/train.parquet"))
    tasks = ("sid_to_sid", "item_paragraph", "sequence_narrative")
    cfg = replace(params.sidreasoner.corpus, tasks=tasks, max_per_task=6, max_reasoning=5)
    return cat, users, sequences, cfg, params.sidreasoner.teacher


def teacher_for(base: str, cache: Path, teacher_cfg, **changes) -> ChatTeacher:
    cfg = replace(teacher_cfg, kind="openai", base_url=base, model="tiny-teacher", cache_dir=str(cache), **changes)
    return ChatTeacher(cfg, cache, progress=False)


def test_the_endpoint_writes_the_texts_by_the_templates_rules_and_is_cached(server: str, small, tmp_path) -> None:
    cat, users, sequences, cfg, teacher_cfg = small
    teacher = teacher_for(server, tmp_path / "cache", teacher_cfg)
    frame = build_corpus(cat, users, sequences, cfg, seed=0, teacher=teacher)
    templated = build_corpus(cat, users, sequences, cfg, seed=0, teacher=TemplateTeacher())
    # the same samples in the same order; only the teacher's texts differ
    pd.testing.assert_frame_equal(frame.drop(columns="response"), templated.drop(columns="response"))
    same = frame["task"] == "sid_to_sid"
    assert frame.loc[same, "response"].tolist() == templated.loc[same, "response"].tolist()
    asked = len(FakeTeacher.bodies)
    # 6 paragraphs + 6 narratives + 5 reasonings; a sample drawn for both reasoning tasks is asked once
    assert teacher.stats["requests"] == asked and asked + teacher.stats["cached"] == 6 + 6 + 5
    assert {b["model"] for b in FakeTeacher.bodies} == {"tiny-teacher"}
    for _, row in frame[frame["task"] == "item_paragraph"].iterrows():  # by SID only, the think block dropped
        sid, title = cat.sid[row["item_id"]], cat.title[row["item_id"]]
        assert row["response"] == f"{sid} is a fine thing." and title.lower() not in row["response"].lower()
    for _, row in frame[frame["phase"] == "reason"].iterrows():
        first = re.findall(r"(?:<[a-d]_\d+>){4}", row["prompt"])[0]  # the history's oldest SID, from the prompt
        assert (
            row["response"]
            == f"{THINK}\nI see {first} first, so more of the same.\n{END_THINK}\n\n" + cat.sid[row["item_id"]]
        )
    narratives = frame[frame["task"] == "sequence_narrative"]["response"]
    assert narratives.str.contains("so more of the same. The next movie is <a_").all()
    # a second build sends nothing: every answer comes from the cache, and the corpus is the same
    again = teacher_for(server, tmp_path / "cache", teacher_cfg)
    pd.testing.assert_frame_equal(build_corpus(cat, users, sequences, cfg, seed=0, teacher=again), frame)
    assert len(FakeTeacher.bodies) == asked and again.stats == {"cached": 6 + 6 + 5}


@pytest.mark.parametrize("mode", ["leak", "no-sid"])
def test_a_text_that_breaks_the_rules_is_replaced_by_the_template(server: str, small, tmp_path, mode: str) -> None:
    cat, users, sequences, cfg, teacher_cfg = small
    FakeTeacher.mode = mode
    teacher = teacher_for(server, tmp_path / "cache", teacher_cfg)
    frame = build_corpus(cat, users, sequences, cfg, seed=0, teacher=teacher)
    templated = build_corpus(cat, users, sequences, cfg, seed=0, teacher=TemplateTeacher())
    task = "reason" if mode == "leak" else "item_paragraph"
    got, want = frame[frame["task"] == task], templated[templated["task"] == task]
    # a reasoning may name the target where the history holds it (its SID is then in the prompt): kept
    kept = [cat.sid[t] in p for p, t in zip(got["prompt"], got["item_id"], strict=True)]
    replaced = [g == w for g, w in zip(got["response"], want["response"], strict=True)]
    assert replaced == ([not k for k in kept] if mode == "leak" else [True] * len(kept))
    assert teacher.stats["rejected"] >= sum(replaced) > 0


@pytest.mark.parametrize(
    ("mode", "retries", "sent", "message"),
    [
        ("401", 3, 1, r"/v1/chat/completions: HTTP 401"),  # not worth retrying: fails at once
        ("503", 1, 2, r"no answer after 2 tries \(HTTP 503"),
    ],
)
def test_endpoint_errors_name_the_url(server: str, small, tmp_path, mode, retries, sent, message) -> None:
    cat, *_, teacher_cfg = small
    FakeTeacher.mode = mode
    teacher = teacher_for(server, tmp_path / "cache", teacher_cfg, retries=retries, concurrency=1)
    with pytest.raises(TeacherError, match=message):
        teacher.paragraphs(cat, [0])
    assert len(FakeTeacher.bodies) == sent and not (tmp_path / "cache").exists()


def test_an_unreachable_endpoint_fails_the_stage_with_its_url(sid_root: Path, params: Params, tmp_path) -> None:
    from s2gr_core.stages import get_stage
    from s2gr_core.stages.base import StageFailed

    teacher = replace(params.sidreasoner.teacher, kind="openai", base_url="http://127.0.0.1:9/v1", model="m", retries=0)
    bad = replace(params, sidreasoner=replace(params.sidreasoner, teacher=teacher))
    with pytest.raises(StageFailed, match=r"sidreasoner.teacher: http://127.0.0.1:9/v1/chat/completions: no answer"):
        get_stage("sidreasoner_corpus").run(bad, sid_root)
    assert not (sid_root / "data/sidreasoner").exists()


def test_clean_drops_a_think_block_and_joins_lines() -> None:
    assert clean(f"{THINK}\nhidden\n{END_THINK}\nA\n  B  ") == "A B"
