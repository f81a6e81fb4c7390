"""Bad input fails the right stage with a clear message, and loses nothing.

A good run first; then one defect in a raw file; the stages re-run in order.
The failing stage must name the problem (file, line, field), and every output
of the last good run downstream of it must survive byte for byte.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from s2gr_core.config import Params
from s2gr_core.data.tables import DataFormatError
from s2gr_core.stages import STAGES, StageFailed, get_stage

INTER = "ml-100k/ml-100k.inter"
ITEM = "ml-100k/ml-100k.item"


def snapshot(root: Path, stage_names: list[str]) -> dict[str, str]:
    out = {}
    for name in stage_names:
        stage = get_stage(name)
        for rel in [*stage.outs.values(), *stage.metrics.values()]:
            path = root / rel
            files = sorted(path.rglob("*")) if path.is_dir() else [path]
            for f in files:
                if f.is_file():
                    out[str(f.relative_to(root))] = hashlib.md5(f.read_bytes()).hexdigest()
    return out


DATA_STAGES = ("fetch", "ingest", "validate", "split")


def run_all(params: Params, root: Path, names: tuple[str, ...] | None = None) -> None:
    for stage in STAGES:
        if names is None or stage.name in names:
            stage.run(params, root)


def edit(path: Path, fn: Callable[[list[str]], list[str]]) -> None:
    path.write_text("\n".join(fn(path.read_text().splitlines())) + "\n")


def blank_user(lines: list[str]) -> list[str]:
    fields = lines[5].split("\t")
    fields[0] = ""
    return [*lines[:5], "\t".join(fields), *lines[6:]]


CASES = {
    "missing column": (
        INTER,
        lambda ls: ["\t".join(line.split("\t")[:3]) for line in ls],
        "ingest",
        r"ml-100k.inter: missing column\(s\) \['timestamp'\]",
    ),
    "null ids": (
        INTER,
        blank_user,
        "validate",
        r"interactions.user_key: must not be null -- 1 of 84 rows fail, e.g. raw line 6 of ml-100k.inter",
    ),
    "duplicate keys": (
        ITEM,
        lambda ls: [*ls, ls[4]],
        "validate",
        r"items.item_id: item ids must be unique .* -- 2 of 41 rows fail, e.g. raw line 5 of ml-100k.item "
        r"\(item_key='4', item_id=3\); raw line 42",
    ),
    "unknown item": (
        INTER,
        lambda ls: [*ls, "1\t999\t4\t880009999"],
        "validate",
        r"interactions.item_key: values must exist in items.item_key -- 1 of 85 rows fail, "
        r"e.g. raw line 86 of ml-100k.inter \(item_key='999', user_key='1'\)",
    ),
    "empty file": (ITEM, lambda ls: [], "ingest", r"ml-100k.item: file is empty"),
    "wrong delimiter": (
        INTER,
        lambda ls: [line.replace("\t", ",") for line in ls],
        "ingest",
        r"ml-100k.inter: line 1 has a single column .* must be tab-separated",
    ),
    "user below k-core": (
        INTER,
        lambda ls: [*ls, "99\t1\t3\t880000001", "99\t2\t3\t880000002", "99\t3\t3\t880000003"],
        "validate",
        r"user_counts.n_interactions: every user needs at least 5 interactions \(k-core\) -- "
        r"1 of 13 rows fail, e.g. row \(user_key='99', n_interactions=3\)",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_fails_clearly_and_keeps_last_good_outputs(
    case: str, params: Params, data_dir: Path, tmp_path: Path
) -> None:
    file, mutate, failing_stage, message = CASES[case]
    root = tmp_path / "proj"
    run_all(params, root)
    names = [s.name for s in STAGES]
    protected = names[names.index(failing_stage) :]
    before = snapshot(root, protected)
    assert before, "the good run must have produced outputs"

    edit(data_dir / file, mutate)
    with pytest.raises((StageFailed, DataFormatError)) as caught:
        for stage in STAGES:
            stage.run(params, root)
            assert stage.name != failing_stage, f"{failing_stage} accepted the {case} defect"
    assert caught.match(message), str(caught.value)
    assert snapshot(root, protected) == before
    if failing_stage == "validate":
        failed_md = root / "reports" / "validation_failed.md"
        failed_html = root / "reports" / "validation_failed.html"
        assert "FAILED" in failed_md.read_text()
        page = failed_html.read_text()
        assert '<span class="badge fail">FAILED</span></h1>' in page and '<tr class="fail">' in page
        assert "<script" not in page and "http" not in page  # self-contained: opens offline
        assert isinstance(caught.value, StageFailed) and {failed_md, failed_html} <= set(caught.value.artifacts)
        assert "PASSED" in (root / "reports" / "validation.html").read_text()  # the last good page stays


def test_empty_titles_warn_but_pass(params: Params, tmp_path: Path) -> None:
    from dataclasses import replace

    beauty = replace(params, data=replace(params.data, name="amazon-beauty"))
    root = tmp_path / "proj"
    run_all(beauty, root, DATA_STAGES)  # the 6-item fixture catalogue is too small for top-20 lists
    report = (root / "reports" / "validation.md").read_text()
    assert "PASSED" in report and "1 warnings" in report
    assert "items.title: items should have a title -- 1 of 6 rows fail" in report
    page = (root / "reports" / "validation.html").read_text()
    assert '<span class="badge ok">PASSED</span>' in page and "<h2>Warnings</h2>" in page
    assert '<tr class="warn"><td><code>expect_column_values_to_not_be_null</code></td><td>title</td>' in page
    assert "1 of 6" in page
    # the page depends on the data only: validating the same tables again gives the same bytes
    from s2gr_core.stages import get_stage

    get_stage("validate").run(beauty, root)
    assert (root / "reports" / "validation.html").read_text() == page


def test_empty_text_policy_fail(params: Params, tmp_path: Path) -> None:
    from dataclasses import replace

    strict = replace(
        params,
        data=replace(params.data, name="amazon-beauty"),
        validate=replace(params.validate, empty_text="fail"),
    )
    with pytest.raises(StageFailed, match=r"items.title: items should have a title"):
        run_all(strict, tmp_path / "proj", DATA_STAGES)
    assert not (tmp_path / "proj" / "data" / "split").exists()


def test_catalogue_smaller_than_the_lists_is_a_clear_error(params: Params, tmp_path: Path) -> None:
    from dataclasses import replace

    beauty = replace(params, data=replace(params.data, name="amazon-beauty"))
    run_all(beauty, tmp_path / "proj", DATA_STAGES)
    with pytest.raises(StageFailed, match=r"the catalogue has 6 items, fewer than inference.top_k=20"):
        get_stage("train_sasrec").run(beauty, tmp_path / "proj")


def test_corrupt_predictions_fail_evaluation_and_keep_its_outputs(params: Params, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path / "proj"
    run_all(params, root)
    before = snapshot(root, ["evaluate_sasrec", "report"])
    path = root / "predictions" / "sasrec" / "test.parquet"
    table = pq.read_table(path)
    items = table["item_id"].to_numpy().copy()
    items[1] = items[0]  # user's rank-2 item repeats its rank-1 item
    pq.write_table(table.set_column(2, "item_id", pa.array(items, pa.int32())), path)
    with pytest.raises(StageFailed, match=r"sasrec: .*test.parquet: .* duplicates within a list; e.g. user_id 0"):
        get_stage("evaluate_sasrec").run(params, root)
    assert snapshot(root, ["evaluate_sasrec", "report"]) == before


def test_a_crafted_checkpoint_in_any_location_never_runs_and_fails_its_reader_cleanly(
    params: Params, tmp_path: Path
) -> None:
    import torch

    from tests.test_io import Payload

    root = tmp_path / "proj"
    run_all(params, root)
    readers = {  # where a checkpoint is read back from, and the stage that reads it
        "models/codebook/codebook.pt": "sids",
        "checkpoints/sasrec/last.pt": "train_sasrec",
        "checkpoints/tiger/last.pt": "train_tiger",
        "checkpoints/s2gr/last.pt": "train_s2gr",
    }
    for checkpoint, stage in readers.items():
        marker = tmp_path / f"ran-{stage}"
        torch.save({"model": Payload(marker), "epoch": 1}, root / checkpoint)
        with pytest.raises(ValueError, match=rf"{checkpoint}: not a checkpoint of plain tensors and values"):
            get_stage(stage).run(params, root)
        assert not marker.exists(), f"{checkpoint}: the payload ran"
