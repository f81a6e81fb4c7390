"""The stage registry: the one declaration of every pipeline stage.

``dvc.yaml`` must agree with it (``tests/test_contract.py``), and the CLI runs
stages from it (``s2gr stage NAME``). Order here is the DAG's topological order.
"""

from __future__ import annotations

from s2gr_core.stages.base import Stage, StageFailed, StageResult
from s2gr_core.stages.data import fetch_stage, ingest_stage, split_stage, validate_stage

RAW = "data/raw"
INTERACTIONS = "data/processed/interactions.parquet"
ITEMS = "data/processed/items.parquet"
VALIDATION_REPORT = "reports/validation.json"
IO = "s2gr_core/io.py"  # atomic writers: a change there may change any output

STAGES: tuple[Stage, ...] = (
    Stage(
        name="fetch",
        fn=fetch_stage,
        help="Copy the dataset's raw files from S2GR_DATA_DIR / data.source_dir, or download ml-100k "
        "from the recbole==1.2.1 wheel (checksums verified).",
        deps={},
        outs={"raw": RAW},
        params=("data",),
        code=("s2gr_core/data/fetch.py", IO),
    ),
    Stage(
        name="ingest",
        fn=ingest_stage,
        help="Parse raw files into typed Parquet tables: interactions and items (deterministic ids).",
        deps={"raw": RAW},
        outs={"interactions": INTERACTIONS, "items": ITEMS},
        params=("data.name",),
        code=("s2gr_core/data", IO),
    ),
    Stage(
        name="validate",
        fn=validate_stage,
        help="Great Expectations gate on interactions and items; fails the pipeline on bad data.",
        deps={"interactions": INTERACTIONS, "items": ITEMS},
        outs={"report": VALIDATION_REPORT, "summary": "reports/validation.md"},
        params=("validate",),
        metrics={"metrics": "metrics/validation.json"},
        code=("s2gr_core/validation.py", IO),
    ),
    Stage(
        name="split",
        fn=split_stage,
        help="Leave-one-out split (last -> test, second-to-last -> valid) and dataset statistics.",
        deps={"interactions": INTERACTIONS, "items": ITEMS, "report": VALIDATION_REPORT},
        outs={
            "train": "data/split/train.parquet",
            "valid": "data/split/valid.parquet",
            "test": "data/split/test.parquet",
        },
        params=("split",),
        metrics={"metrics": "metrics/data.json"},
        code=("s2gr_core/split.py", IO),
    ),
)

STAGE_BY_NAME = {s.name: s for s in STAGES}


def get_stage(name: str) -> Stage:
    try:
        return STAGE_BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown stage {name!r}; stages: {', '.join(STAGE_BY_NAME)}") from None


__all__ = ["STAGES", "Stage", "StageFailed", "StageResult", "get_stage"]
