"""The README and docs/ keep up with the code and with the measurements.

* every stage of the registry is described in docs/pipeline.md, every CLI command somewhere in the docs;
* every relative link (file and #anchor) resolves;
* the README fits on a screen, links every docs page, and each number in it comes from a results file
  (the ``<!-- results:NAME -->`` blocks are re-rendered from ``docs/results/NAME.json``).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from s2gr.cli import build_parser
from s2gr_core.stages import STAGES
from tests.conftest import REPO

sys.path.insert(0, str(REPO / "infra"))
import publish_results

README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
PAGES = [README, *DOCS]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
README_MAX_LINES = 100


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    out, fence = set(), False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            fence = not fence
        elif not fence and (m := re.match(r"^#+ (.*)", line)):
            out.add(slug(m.group(1)))
    return out


def all_docs_text() -> str:
    return "\n".join(p.read_text() for p in PAGES)


@pytest.mark.parametrize("stage", [s.name for s in STAGES])
def test_every_stage_is_described_in_the_pipeline_page(stage: str) -> None:
    page = (REPO / "docs/pipeline.md").read_text()
    assert f"`{stage}`" in page, f"stage {stage} is not described in docs/pipeline.md"


def test_every_cli_command_is_documented() -> None:
    commands = build_parser()._subparsers._group_actions[0].choices  # argparse keeps its sub-commands there
    text = all_docs_text()
    missing = [c for c in commands if f"s2gr {c}" not in text]
    assert not missing, f"s2gr commands in neither README.md nor docs/: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"^[a-z]+:", target):  # http(s), mailto
            continue
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target} (no heading #{anchor} in {dest.name})")
    assert not broken, f"{page.relative_to(REPO)}: broken links: {broken}"


def test_the_readme_is_a_front_page() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= README_MAX_LINES, f"README.md has {len(text.splitlines())} lines"
    unlinked = [p.name for p in DOCS if f"(docs/{p.name})" not in text]
    assert not unlinked, f"docs pages the README does not link: {unlinked}"


def test_readme_result_blocks_are_rendered_from_their_results_files() -> None:
    text = README.read_text()
    blocks = list(publish_results.BLOCK.finditer(text))
    assert blocks, "the README quotes no results file"
    for m in blocks:
        path = REPO / "docs/results" / f"{m.group('name')}.json"
        assert path.is_file(), f"README block results:{m.group('name')} has no {path.relative_to(REPO)}"
        expected = publish_results.render(json.loads(path.read_text()))
        assert m.group("body") == expected, f"README block results:{m.group('name')} differs from {path.name}"


def test_every_number_in_the_readme_is_in_a_results_file() -> None:
    published = set()
    for path in (REPO / "docs/results").glob("*.json"):
        for row in json.loads(path.read_text())["rows"]:
            published |= {f"{v:.4f}" for v in row.values() if isinstance(v, float)}
    text = re.sub(r"https?://\S+", "", README.read_text())  # an arXiv id is not a measurement
    quoted = set(re.findall(r"\b\d+\.\d{3,}\b", text))
    assert quoted, "no measured numbers found in README.md"
    assert not quoted - published, f"README numbers not in docs/results/: {sorted(quoted - published)}"


def test_a_stale_block_is_caught(tmp_path: Path) -> None:
    record = json.loads((REPO / "docs/results/make-run-ml-100k.json").read_text())
    block = publish_results.render(record)
    shown = f"{record['rows'][0]['ndcg_at_10']:.4f}"  # a number the block prints, edited by hand
    assert shown in block
    page = f"x\n<!-- results:make-run-ml-100k -->\n{block.replace(shown, '0.0999')}<!-- /results -->\n"
    m = next(publish_results.BLOCK.finditer(page))
    assert m.group("body") != block
    fixed = publish_results.replace_block(page, "make-run-ml-100k", block)
    assert "0.0999" not in fixed and fixed.count("<!-- results:") == 1
    with pytest.raises(SystemExit, match="expected one <!-- results:other"):
        publish_results.replace_block(page, "other", block)


def test_the_models_table_is_read_strictly(tmp_path: Path) -> None:
    bad = tmp_path / "models.csv"
    bad.write_text("model,seeds,config,recall_at_5_mean\ns2gr,one,abc,0.1\n")
    with pytest.raises(SystemExit, match=r"models.csv: line 2: ValueError"):
        publish_results.read_models_csv(bad)
    with pytest.raises(SystemExit, match="no such file"):
        publish_results.read_models_csv(tmp_path / "missing.csv")
