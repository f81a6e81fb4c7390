# ruff: noqa: E501  (one variant per line: the corpus reads as a table)
"""A bad-input corpus: malformed and harmless variants of the raw MovieLens files, each run
through the data stages (fetch -> ingest -> validate -> split) on top of a good run.

A rejected variant must fail the stage that owns the problem, with a message naming the file
(and line or field), and leave every output that later stages read (processed tables, split,
validation report) byte-identical. A harmless variant must pass with identical statistics
(the same split and ``metrics/data.json``).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from s2gr_core.config import Params, params_from_dict
from s2gr_core.data.fetch import FetchError
from s2gr_core.data.tables import DataFormatError
from s2gr_core.stages import StageFailed, get_stage
from tests.conftest import repo_params
from tests.fixtures import write_ml100k
from tests.test_parsers import spreadsheet_export
from tests.test_stage_failures import DATA_STAGES, run_all, snapshot

INTER, ITEM = "ml-100k.inter", "ml-100k.item"
Mutation = Callable[[bytes], bytes | None]  # None: delete the file


@dataclass(frozen=True)
class Variant:
    file: str
    mutate: Mutation
    stage: str | None  # the stage that must reject it; None = harmless, must pass
    message: str = ""


def lines(fn: Callable[[list[str]], list[str]]) -> Mutation:
    """A mutation of the file's lines (header first), written back with LF endings."""
    return lambda data: ("\n".join(fn(data.decode().split("\n")[:-1])) + "\n").encode()


def fields(row: int, fn: Callable[[list[str]], list[str]]) -> Mutation:
    """Change the tab-separated fields of one line (0 = header)."""
    return lines(lambda ls: [*ls[:row], "\t".join(fn(ls[row].split("\t"))), *ls[row + 1 :]])


def set_field(row: int, column: int, value: str) -> Mutation:
    return fields(row, lambda f: [*f[:column], value, *f[column + 1 :]])


def columns(order: list[int]) -> Mutation:
    return lines(lambda ls: ["\t".join(line.split("\t")[i] for i in order) for line in ls])


VARIANTS = {
    # harmless: accepted, the same tables and statistics
    "bom-and-crlf": Variant(INTER, spreadsheet_export, None),
    "reordered-columns": Variant(INTER, columns([3, 0, 2, 1]), None),
    "extra-column": Variant(INTER, lines(lambda ls: [f"{ls[0]}\tnote:token", *(f"{x}\tok" for x in ls[1:])]), None),
    "trailing-blank-lines": Variant(INTER, lambda b: b + b"\n\n", None),
    # encodings
    "latin-1-title": Variant(ITEM, lambda b: b.replace(b"Movie 2 ", b"Movi\xe9 2 ", 1), "ingest", rf"{ITEM}: byte \d+ \(0xe9, line 3\) is not UTF-8"),
    "utf-16": Variant(INTER, lambda b: b.decode().encode("utf-16"), "ingest", rf"{INTER}: starts with a UTF-16 byte-order mark"),
    "binary-garbage": Variant(ITEM, lambda b: bytes(range(256)) * 8, "ingest", rf"{ITEM}: byte 128 \(0x80, line 2\) is not UTF-8"),
    # structure
    "missing-file": Variant(ITEM, lambda b: None, "fetch", rf"ml-100k: the local copy of ml-100k lacks {ITEM}"),
    "empty-file": Variant(INTER, lambda b: b"", "ingest", rf"{INTER}: file is empty"),
    "header-only": Variant(INTER, lines(lambda ls: ls[:1]), "ingest", rf"{INTER}: no data rows after the header"),
    "truncated-row": Variant(INTER, lines(lambda ls: [*ls[:-1], ls[-1][:5]]), "ingest", rf"{INTER}: line 85 has \d field\(s\), the header has 4"),
    "comma-delimited": Variant(INTER, lines(lambda ls: [x.replace("\t", ",") for x in ls]), "ingest", rf"{INTER}: line 1 has a single column .* must be tab-separated"),
    "semicolon-delimited": Variant(ITEM, lines(lambda ls: [x.replace("\t", ";") for x in ls]), "ingest", rf"{ITEM}: line 1 has a single column"),
    "missing-column": Variant(INTER, columns([0, 1, 2]), "ingest", rf"{INTER}: missing column\(s\) \['timestamp'\]"),
    "extra-field-in-a-row": Variant(INTER, fields(7, lambda f: [*f, "9"]), "ingest", rf"{INTER}: line 8 has 5 field\(s\), the header has 4"),
    # values
    "text-timestamp": Variant(INTER, set_field(3, 3, "yesterday"), "ingest", rf"{INTER}: line 4: column 'timestamp' is not a number: 'yesterday'"),
    "nan-rating": Variant(INTER, set_field(5, 2, "nan"), "ingest", rf"{INTER}: line 6: column 'rating' is not a number: 'nan'"),
    "absurd-rating": Variant(INTER, set_field(11, 2, "9"), "validate", r"interactions.rating: ratings must lie in \[1, 5\] \(validate.rating_range\) -- 1 of 84 rows fail, e.g. raw line 12"),
    "negative-rating": Variant(INTER, set_field(3, 2, "-2"), "validate", r"interactions.rating: ratings must lie in \[1, 5\] .* -- 1 of 84 rows fail, e.g. raw line 4"),
    "negative-timestamp": Variant(INTER, set_field(9, 3, "-5"), "validate", r"interactions.timestamp: timestamps \(Unix seconds\) must be >= 0 -- 1 of 84 rows fail, e.g. raw line 10"),
    "missing-timestamp": Variant(INTER, set_field(2, 3, ""), "validate", r"interactions.timestamp: every row needs a timestamp .* -- 1 of 84 rows fail, e.g. raw line 3"),
    "null-user": Variant(INTER, set_field(5, 0, ""), "validate", r"interactions.user_key: must not be null -- 1 of 84 rows fail, e.g. raw line 6 of ml-100k.inter"),
    "unknown-item": Variant(INTER, lines(lambda ls: [*ls, "1\t999\t4\t880009999"]), "validate", r"interactions.item_key: values must exist in items.item_key -- 1 of 85 rows fail, e.g. raw line 86"),
    "huge-item-id": Variant(INTER, set_field(4, 1, "9" * 30), "validate", r"interactions.item_key: values must exist in items.item_key -- 1 of 84 rows fail, e.g. raw line 5"),
    "huge-user-id": Variant(INTER, set_field(4, 0, "9" * 30), "validate", r"user_counts.n_interactions: every user needs at least 5 interactions .*\(user_key='9{30}'"),
    "duplicated-item": Variant(ITEM, lines(lambda ls: [*ls, ls[4]]), "validate", r"items.item_id: item ids must be unique .* raw line 5 of ml-100k.item"),
    "user-below-k-core": Variant(INTER, lines(lambda ls: [*ls, "99\t1\t3\t880000001", "99\t2\t3\t880000002"]), "validate", r"user_counts.n_interactions: every user needs at least 5 interactions"),
}  # fmt: skip

READ_DOWNSTREAM = ("validate", "split")  # the processed tables, report and split every later stage reads


@pytest.fixture(scope="module")
def good_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the fixture's raw data (``datasets/``) and a project after a good run (``proj/``)."""
    base = tmp_path_factory.mktemp("corpus")
    write_ml100k(base / "datasets" / "ml-100k")
    run_all(params_for(base), base / "proj", DATA_STAGES)
    return base


def params_for(base: Path) -> Params:
    return params_from_dict(repo_params(data={"source_dir": str(base / "datasets")}))


@pytest.mark.parametrize("name", list(VARIANTS))
def test_bad_input_corpus(name: str, good_run: Path, tmp_path: Path) -> None:
    variant = VARIANTS[name]
    base = tmp_path / "copy"
    shutil.copytree(good_run, base)
    before = snapshot(base / "proj", list(DATA_STAGES))
    raw = base / "datasets" / "ml-100k" / variant.file
    mutated = variant.mutate(raw.read_bytes())
    raw.unlink()
    if mutated is not None:
        raw.write_bytes(mutated)

    if variant.stage is None:
        run_all(params_for(base), base / "proj", DATA_STAGES)
        after = snapshot(base / "proj", list(READ_DOWNSTREAM))
        assert after == {k: v for k, v in before.items() if k in after}, f"{name} changed the data"
        return
    with pytest.raises((StageFailed, DataFormatError, FetchError)) as caught:
        for stage in DATA_STAGES:
            get_stage(stage).run(params_for(base), base / "proj")
            assert stage != variant.stage, f"{variant.stage} accepted the {name} variant"
    assert caught.match(variant.message), str(caught.value)
    assert "Traceback" not in str(caught.value) and "UnicodeDecodeError" not in str(caught.value)
    protected = [*DATA_STAGES[DATA_STAGES.index(variant.stage) :], *READ_DOWNSTREAM]
    kept = snapshot(base / "proj", protected)
    assert kept == {k: v for k, v in before.items() if k in kept} and kept, f"{name} lost a good output"


def test_the_corpus_is_large_and_covers_both_outcomes() -> None:
    outcomes = {v.stage for v in VARIANTS.values()}
    assert len(VARIANTS) >= 20 and outcomes == {None, "fetch", "ingest", "validate"}
