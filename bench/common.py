"""What every benchmark script shares: the bench work folder and logging to MLflow ("s2gr-bench")."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from s2gr import env  # noqa: E402

env.configure(ROOT)

from s2gr_core.config import Params, load_params  # noqa: E402

RESULTS = ROOT / "bench" / "results"
REPORTED = ("recall_at_5", "recall_at_10", "ndcg_at_5", "ndcg_at_10")  # test metrics in every table


def load_config(path: Path, overrides: Sequence[str], section: str) -> dict:
    """A frozen config, with ``key=value`` overrides of its ``section`` (values parsed as YAML)."""
    import yaml

    config = yaml.safe_load(path.read_text())
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or key not in config[section]:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE with KEY one of {sorted(config[section])}")
        config[section][key] = yaml.safe_load(value)
    return config


def stat(values: Sequence[float]) -> dict[str, float]:
    """Mean and sample std (0 for a single value) of one metric over seeds."""
    import numpy as np

    arr = np.asarray(values, dtype=float)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0}


def prepare(dataset: str) -> tuple[Path, Params]:
    """The split of ``dataset`` made by the pipeline's own data stages, in bench/work/<dataset>/."""
    from s2gr_core.stages import get_stage

    params = load_params(ROOT / "params.yaml")
    params = replace(params, data=replace(params.data, name=dataset))
    work = ROOT / "bench" / "work" / dataset
    if not (work / "data" / "split" / "test.parquet").is_file():
        for name in ("fetch", "ingest", "validate", "split"):
            get_stage(name).run(params, work)
    return work, params


def override(params: Params, sections: dict[str, dict]) -> Params:
    """``params`` with some fields of some sections replaced: {section: {field: value}}."""
    return replace(params, **{name: replace(getattr(params, name), **values) for name, values in sections.items()})


def log_run(
    name: str,
    tags: dict[str, str],
    metrics: dict[str, float],
    params: dict[str, Any],
    artifacts: Sequence[Path] = (),
) -> str:
    """One finished MLflow run in the experiment ``s2gr-bench`` (same store as the pipeline)."""
    from mlflow.entities import Metric, Param

    from s2gr.tracking import client, experiment_id, git_info

    mlf = client(ROOT)
    run = mlf.create_run(experiment_id(mlf, "s2gr-bench", ROOT), run_name=name, tags={**git_info(ROOT), **tags})
    now = int(time.time() * 1000)
    mlf.log_batch(
        run.info.run_id,
        metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
        params=[Param(k, str(v)) for k, v in params.items()],
    )
    for path in artifacts:
        mlf.log_artifact(run.info.run_id, str(path))
    mlf.set_terminated(run.info.run_id)
    return run.info.run_id
