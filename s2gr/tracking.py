"""MLflow tracking: one parent run per pipeline run, one nested run per stage.

How stage runs find their parent (documented in docs/operations.md):

1. ``S2GR_MLFLOW_PARENT_RUN_ID`` set (the Prefect flow sets it): nest under it.
2. Else, under the same ``dvc repro`` / ``dvc exp run`` process: every stage of
   one DVC invocation shares the parent tagged ``s2gr.group=dvc-<pid>-<start>``.
3. Else (a stage run by hand): a parent of its own.

Embedded default: ``sqlite:///<root>/mlflow.db`` with artifacts in
``<root>/mlartifacts``; ``MLFLOW_TRACKING_URI`` points elsewhere (e.g. a server).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PARENT_ENV = "S2GR_MLFLOW_PARENT_RUN_ID"
MAX_PARAM_LEN = 6000
HEALTH_TIMEOUT_S = 5.0


class TrackingUnavailable(RuntimeError):
    """The MLflow tracking store does not answer: a transient fault, worth retrying the stage."""


def tracking_root(root: Path) -> Path:
    # ``dvc exp run --temp/--queue`` runs in a copy; DVC_ROOT names the real project.
    return Path(os.environ.get("DVC_ROOT") or root)


def tracking_uri(root: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{tracking_root(root) / 'mlflow.db'}"


def check_tracking(root: Path, timeout: float = HEALTH_TIMEOUT_S) -> None:
    """Raise :class:`TrackingUnavailable`, naming the URI, when a tracking server does not answer
    its ``/health`` endpoint within ``timeout`` seconds (file and SQLite stores are not checked)."""
    uri = tracking_uri(root)
    if not uri.startswith(("http://", "https://")):
        return
    url = f"{uri.rstrip('/')}/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            if resp.status == 200:
                return
            reason = f"HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        reason = f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        reason = str(getattr(exc, "reason", exc))
    raise TrackingUnavailable(
        f"MLflow tracking server {uri} is not answering ({url}: {reason}). Start it or point "
        "MLFLOW_TRACKING_URI elsewhere, or run without logging (S2GR_TRACKING=off)"
    )


def _quiet() -> None:
    for name in ("alembic", "mlflow.store.db.utils", "mlflow.tracking", "mlflow.store"):
        logging.getLogger(name).setLevel(logging.WARNING)


def client(root: Path) -> Any:
    from mlflow.tracking import MlflowClient

    _quiet()
    return MlflowClient(tracking_uri=tracking_uri(root))


# MLflow's own kind for an experiment of trained models (its UI's GenAI/model-training distinction).
# MLflow 3.17's UI still opens on its GenAI overview; the runs are at #/experiments/<id>/runs (docs/operations.md).
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def experiment_id(mlf: Any, name: str, root: Path) -> str:
    """The id of experiment ``name``, created if missing and marked as model development (EXPERIMENT_KIND),
    an older experiment of this project's included."""
    key, kind = EXPERIMENT_KIND
    exp = mlf.get_experiment_by_name(name)
    if exp is not None:
        if exp.tags.get(key) is None:
            mlf.set_experiment_tag(exp.experiment_id, key, kind)
        return exp.experiment_id
    uri = tracking_uri(root)
    local = not uri.startswith(("http://", "https://", "databricks"))
    location = (tracking_root(root) / "mlartifacts").as_uri() if local else None
    try:
        return mlf.create_experiment(name, artifact_location=location, tags={key: kind})
    except Exception:  # created concurrently by another stage
        exp = mlf.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def git_info(root: Path) -> dict[str, str]:
    def git(*args: str) -> str:
        proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
        return proc.stdout.strip() if proc.returncode == 0 else ""

    commit = git("rev-parse", "HEAD") or "unknown"
    dirty = "true" if git("status", "--porcelain", "--untracked-files=no") else "false"
    return {"git_commit": commit, "mlflow.source.git.commit": commit, "git_dirty": dirty}


def dvc_group() -> tuple[str, str] | None:
    """(group key, command line) of the ``dvc`` process this stage runs under, if any."""
    import psutil

    with suppress(psutil.Error):
        proc = psutil.Process().parent()
        while proc is not None:
            cmd = proc.cmdline()
            for i, arg in enumerate(cmd[:3]):  # dvc ..., python -m dvc ..., python .../bin/dvc ...
                if os.path.basename(arg) == "dvc":
                    return f"dvc-{proc.pid}-{int(proc.create_time())}", " ".join(["dvc", *cmd[i + 1 :]])
            proc = proc.parent()
    return None


def base_tags(root: Path, dataset: str) -> dict[str, str]:
    tags = {**git_info(root), "dataset": dataset}
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc_experiment"] = os.environ["DVC_EXP_NAME"]
    return tags


def start_pipeline_run(root: Path, experiment: str, dataset: str, trigger: str, group: str | None = None) -> str:
    """Create the parent run of one pipeline run; returns its id."""
    mlf = client(root)
    tags = {
        **base_tags(root, dataset),
        "s2gr.kind": "pipeline",
        "s2gr.trigger": trigger,
        "s2gr.group": group or f"run-{uuid.uuid4().hex[:12]}",
        # the UI's Source column: what started the pipeline run
        "mlflow.source.name": trigger,
        "mlflow.source.type": "LOCAL",
    }
    name = f"pipeline-{dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
    run = mlf.create_run(experiment_id(mlf, experiment, root), run_name=name, tags=tags)
    return run.info.run_id


def end_run(root: Path, run_id: str, ok: bool, inputs: dict[str, Path] | None = None) -> None:
    """Close a pipeline run; ``inputs`` (role -> path) are logged on it first as its dataset inputs."""
    mlf = client(root)
    if inputs:
        try:
            log_dataset_inputs(mlf, run_id, root, inputs)
        except Exception as exc:  # the run's status matters more than its input list
            print(f"warning: MLflow run {run_id}: its dataset inputs were not logged: {exc}", file=sys.stderr)
    mlf.set_terminated(run_id, status="FINISHED" if ok else "FAILED")


def log_dataset_inputs(mlf: Any, run_id: str, root: Path, deps: dict[str, Path]) -> None:
    """Each existing path of ``deps`` (role -> path) as an MLflow dataset input of the run: the path
    relative to ``root`` as name, the hash DVC records for it as digest (so a run names the data version it
    used), the role as context. A path that does not exist is skipped, not invented."""
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    inputs = []
    for role, path in deps.items():
        if not path.exists():
            continue
        rel = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
        size = sum(p.stat().st_size for p in tree_files(path))
        dataset = Dataset(
            name=rel,
            digest=dvc_digest(path),
            source_type="local",
            source=json.dumps({"uri": rel}),
            profile=json.dumps({"bytes": size}),
        )
        inputs.append(DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, role)]))
    if inputs:
        mlf.log_inputs(run_id, datasets=inputs)


@dataclass(slots=True)
class Parent:
    run_id: str
    owned: bool  # this stage process manages the parent's status


def find_or_create_parent(mlf: Any, root: Path, experiment: str, dataset: str) -> Parent:
    if os.environ.get(PARENT_ENV):
        return Parent(os.environ[PARENT_ENV], owned=False)
    group = dvc_group()
    if group is not None:
        key, cmd = group
        exp_id = experiment_id(mlf, experiment, root)
        found = mlf.search_runs([exp_id], filter_string=f"tags.`s2gr.group` = '{key}'", max_results=1)
        if found:
            mlf.update_run(found[0].info.run_id, status="RUNNING")
            return Parent(found[0].info.run_id, owned=True)
        return Parent(start_pipeline_run(root, experiment, dataset, trigger=cmd, group=key), owned=True)
    return Parent(start_pipeline_run(root, experiment, dataset, trigger="s2gr stage"), owned=True)


def tree_files(path: Path) -> list[Path]:
    """``path`` itself for a file; a folder's files, sorted by their path inside it (DVC's order)."""
    if path.is_file():
        return [path]
    return sorted((p for p in path.rglob("*") if p.is_file()), key=lambda p: p.relative_to(path).as_posix())


def dvc_digest(path: Path) -> str:
    """The hash DVC 3 records for ``path`` in dvc.lock: the md5 of a file's bytes; for a folder, the md5 of
    its listing (``[{"md5": …, "relpath": …}]`` sorted by path, as JSON) followed by ``.dir``."""
    from s2gr_core.io import md5_file

    if path.is_file():
        return md5_file(path)
    listing = [{"md5": md5_file(p), "relpath": p.relative_to(path).as_posix()} for p in tree_files(path)]
    return hashlib.md5(json.dumps(listing, sort_keys=True).encode(), usedforsecurity=False).hexdigest() + ".dir"


def _numeric(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def flatten(prefix: str, value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flatten(f"{prefix}.{k}" if prefix else str(k), v))
        return out
    return {prefix: value}


def evaluation_history(mlf: Any, exp_id: str, dataset: str) -> list[dict[str, Any]]:
    """Finished ``evaluate_*`` runs on ``dataset``: model, seed, run id, start time, metrics."""
    runs = mlf.search_runs(
        [exp_id],
        filter_string=f"tags.dataset = '{dataset}' and tags.stage LIKE 'evaluate_%' and attributes.status = 'FINISHED'",
        max_results=5000,
    )
    out = []
    for run in runs:
        if "model" not in run.data.tags:
            continue
        seed = run.data.tags.get("seed")
        out.append(
            {
                "model": run.data.tags["model"],
                "seed": int(seed) if seed not in (None, "None") else None,
                "config": run.data.tags.get("config"),
                "run_id": run.info.run_id,
                "start_time": run.info.start_time / 1000.0,
                "metrics": dict(run.data.metrics),
            }
        )
    return out


def per_user_results(root: Path, ref: str, dest: Path) -> tuple[Path, str]:
    """A per-user evaluation file from a path, or from an evaluate run id (downloaded). Returns (path, label)."""
    path = Path(ref)
    if path.is_file():
        return path, str(path)
    mlf = client(root)
    try:
        run = mlf.get_run(ref)
    except Exception as exc:
        raise ValueError(f"{ref!r} is neither a per-user results file nor an MLflow run id ({exc})") from None
    stage = run.data.tags.get("stage", "")
    files = [a.path for a in mlf.list_artifacts(ref, stage) if a.path.endswith("_per_user.parquet")]
    if not stage.startswith("evaluate_") or not files:
        raise ValueError(f"run {ref} ({stage or 'no stage'}) has no per-user results: pass an evaluate_* run")
    local = mlf.download_artifacts(ref, files[0], str(dest))
    label = f"{run.data.tags.get('model', '?')} seed {run.data.tags.get('seed', '?')} (run {ref[:8]})"
    return Path(local), label


class StageRun:
    """A nested MLflow run for one stage. Usage::

    with StageRun(root, "split", params_dict, experiment, dataset) as run:
        ...; run.finish(metrics, artifacts)
    """

    def __init__(self, root: Path, stage: str, params: dict[str, Any], experiment: str, dataset: str):
        from mlflow.entities import Param

        self.root, self.stage = root, stage
        self.curves_lost: int | None = None  # the step at which per-step logging failed
        self.mlf = client(root)
        self.parent = find_or_create_parent(self.mlf, root, experiment, dataset)
        tags = {
            **base_tags(root, dataset),
            "stage": stage,
            "mlflow.parentRunId": self.parent.run_id,
            "mlflow.source.name": f"s2gr stage {stage}",
            "mlflow.source.type": "LOCAL",
        }
        exp_id = self.mlf.get_run(self.parent.run_id).info.experiment_id
        self.run_id = self.mlf.create_run(exp_id, run_name=stage, tags=tags).info.run_id
        flat = {k: str(v)[:MAX_PARAM_LEN] for k, v in flatten("", params).items()}
        self.mlf.log_batch(self.run_id, params=[Param(k, v) for k, v in flat.items()])
        self.started = time.time()

    def log_inputs(self, deps: dict[str, Path]) -> None:
        """What the stage reads, as MLflow dataset inputs of its run (:func:`log_dataset_inputs`)."""
        log_dataset_inputs(self.mlf, self.run_id, self.root, deps)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Per-step curves (e.g. one point per epoch) on the stage run: the Reporter hook.

        A tracking fault in the middle of a stage does not stop the stage (its outputs are the
        product, written atomically, and its metrics file keeps every number): the first failure
        is printed, later curve points are skipped, and the end of the stage tries MLflow again.
        """
        from mlflow.entities import Metric

        if self.curves_lost is not None:
            return
        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, step) for k, v in _numeric(metrics).items()]
        if not batch:
            return
        try:
            self.mlf.log_batch(self.run_id, metrics=batch)
        except Exception as exc:
            self.curves_lost = step
            print(
                f"[{self.stage}] warning: MLflow stopped answering at step {step} ({type(exc).__name__}: {exc}); "
                "the stage goes on, its curves from here on are not logged",
                file=sys.stderr,
                flush=True,
            )

    def log_summary(self, metrics: dict[str, float]) -> None:
        """Final metrics on the stage run, and copies on the parent prefixed by stage, so one
        row of the runs table compares whole pipeline runs."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        numeric = _numeric(metrics)
        if not numeric:
            return
        self.mlf.log_batch(self.run_id, metrics=[Metric(k, v, now, 0) for k, v in numeric.items()])
        self.mlf.log_batch(
            self.parent.run_id, metrics=[Metric(f"{self.stage}/{k}", v, now, 0) for k, v in numeric.items()]
        )

    def evaluation_history(self, dataset: str) -> list[dict[str, Any]]:
        """Finished ``evaluate_*`` runs on ``dataset`` in this experiment (the Reporter hook)."""
        return evaluation_history(self.mlf, self.mlf.get_run(self.run_id).info.experiment_id, dataset)

    def log_artifacts(self, paths: list[Path]) -> None:
        for path in paths:
            if path.is_file():
                self.mlf.log_artifact(self.run_id, str(path), artifact_path=self.stage)

    def set_tags(self, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            self.mlf.set_tag(self.run_id, k, str(v)[:5000])

    def close(self, ok: bool) -> None:
        if self.curves_lost is not None:
            self.mlf.set_tag(self.run_id, "tracking_error", f"per-step curves not logged from step {self.curves_lost}")
        self.log_summary({"duration_s": round(time.time() - self.started, 3)})
        status = "FINISHED" if ok else "FAILED"
        self.mlf.set_terminated(self.run_id, status=status)
        if self.parent.owned:
            self.mlf.set_terminated(self.parent.run_id, status=status)
