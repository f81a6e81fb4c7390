"""MLflow model registry: log each model as a pyfunc, register it, and gate @challenger against @champion.

Names (``registry.prefix`` = s2gr, dataset ml-100k):

* ``s2gr-ml-100k-sasrec``, ``-tiger``, ``-s2gr``: one registered model per family. Every pipeline
  run adds a version (tags: the promote run, the data version, the commit), moves ``@challenger``
  to it, and moves ``@champion`` to it when the gate says so.
* ``s2gr-ml-100k``: what ``s2gr serve`` serves. The families' champions compete through the same
  gate; the winner's model becomes a version there with ``@champion``.

Aliases only (model stages are deprecated in MLflow 3). MLflow 3.17 returns empty aliases from
``search_model_versions`` and a store-dependent error code for a missing alias, so aliases are read
with ``get_model_version_by_alias`` and any MlflowException there means "no such alias".

Each family's model is logged in a run of its own, nested in the promote run (``promote/<family>``),
with its means on ``registry.split`` as the logged model's metrics (the MLflow UI's Models tab compares
them), and it is linked as an output of the training run that wrote its weights (found by the
``weights_md5`` tag every model stage sets), so a training run lists the model it produced.

The gate needs both models' per-user results on the same users: each version carries its own
(``evaluation/<family>_per_user.parquet`` on the run that logged it). When the champion was
evaluated on another data version, it is re-scored on the current split through its own pyfunc.
"""

from __future__ import annotations

import contextlib
import functools
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from s2gr.tracking import client, git_info, tracking_uri
from s2gr_core.config import Params
from s2gr_core.evaluation.compare import read_per_user
from s2gr_core.evaluation.gate import Decision, decide
from s2gr_core.evaluation.metrics import per_user_metrics, target_ranks
from s2gr_core.serving.bundle import BundleConfig
from s2gr_core.stages.base import WEIGHTS_TAG

PYFUNC_FILE = Path(__file__).with_name("pyfunc_model.py")
CHAMPION, CHALLENGER = "champion", "challenger"
TAG_DATA, TAG_RUN, TAG_FAMILY = "data_version", "s2gr.run_id", "family"
TAG_RESULTS, TAG_MODEL, TAG_SOURCE = "per_user_results", "model_uri", "source_version"
# md5 of best.pt and of the per-user results: the same model with the same results is not registered again
TAG_CONTENT = "content_md5"


@dataclass(frozen=True, slots=True)
class Logged:
    """A family's model as :meth:`Registry.log` left it."""

    model_uri: str
    results_uri: str
    run_id: str  # the promote/<family> run that holds it
    training_run: str | None  # the run that trained its weights; None when the store has none


def family_model(params: Params, family: str) -> str:
    return f"{params.registry.prefix}-{params.data.name}-{family}"


def serving_model(params: Params) -> str:
    return f"{params.registry.prefix}-{params.data.name}"


def signature(config: BundleConfig) -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, ParamSchema, ParamSpec, Schema

    inputs = Schema(
        [
            ColSpec("string", "user", required=False),
            ColSpec(Array("string"), "history", required=False),
            ColSpec(Array("long"), "item_ids", required=False),
        ]
    )
    outputs = Schema(
        [
            ColSpec(Array("long"), "item_ids"),
            ColSpec(Array("string"), "item_keys"),
            ColSpec(Array("string"), "titles"),
            ColSpec(Array("double"), "scores"),
        ]
    )
    params = ParamSchema(
        [ParamSpec("k", "long", config.default_k), ParamSpec("exclude_history", "boolean", config.exclude_history)]
    )
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def input_example(bundle: Path) -> pd.DataFrame:
    """Two requests of the bundle's own data: a history of item keys and a known user."""
    import pyarrow.parquet as pq

    users = pq.read_table(bundle / "users.parquet").slice(0, 1).to_pylist()[0]
    keys = pd.read_parquet(bundle / "items.parquet")["item_key"].to_numpy()
    return pd.DataFrame({"user": [None, users["user_key"]], "history": [keys[users["history"][-3:]].tolist(), None]})


def pyfunc_spec(bundle: Path) -> dict[str, Any]:
    """What ``mlflow.pyfunc.log_model`` / ``save_model`` get for a bundle: the code file, the bundle, the
    signature, an input example and explicit requirements (MLflow's inference would load the model again)."""
    import torch

    from s2gr_core.serving.bundle import read_config

    return {
        "python_model": str(PYFUNC_FILE),
        "artifacts": {"bundle": str(bundle)},
        "signature": signature(read_config(bundle)),
        "input_example": input_example(bundle),
        "pip_requirements": [f"torch=={torch.__version__.split('+')[0]}", "s2gr"],
    }


def log_recommender(root: Path, run_id: str, bundle: Path, name: str) -> str:
    """Log ``bundle`` as a pyfunc (models from code) on run ``run_id``; returns the model URI."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(root))
    with mlflow.start_run(run_id=run_id, nested=True):
        return mlflow.pyfunc.log_model(name=name, **pyfunc_spec(bundle)).model_uri


def alias_version(mlf: Any, name: str, alias: str) -> Any | None:
    """The version behind ``name@alias``, or None (no such model or alias: the error code depends on the store)."""
    from mlflow.exceptions import MlflowException

    try:
        return mlf.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


@dataclass(slots=True)
class Scored:
    """A registered version and its per-user results on the current data."""

    version: Any
    results: pd.DataFrame | None  # None: it cannot rank the current data (``note`` says why)
    note: str = ""


def rescore(model_uri: str, params: Params, split_file: Path, item_keys: np.ndarray) -> pd.DataFrame:
    """Per-user results of a registered model on ``split_file`` (histories sent as item keys), via its pyfunc."""
    import mlflow

    from s2gr_core.split import load_eval

    model = mlflow.pyfunc.load_model(model_uri)
    users, histories, targets = load_eval(str(split_file))
    call = {"k": max(params.evaluate.ks), "exclude_history": params.inference.exclude_history}
    limit = params.serve.max_batch
    lists = [
        np.asarray(
            model.predict(
                pd.DataFrame({"history": [item_keys[h].tolist() for h in histories[start : start + limit]]}),
                params=call,
            )["item_ids"].tolist(),
            dtype=np.int64,
        )
        for start in range(0, len(users), limit)
    ]
    ranks = target_ranks(np.concatenate(lists), targets)
    return pd.DataFrame(
        {"user_id": users, "split": params.registry.split, **per_user_metrics(ranks, params.evaluate.ks)}
    )


class Registry:
    """The registry as the promote stage uses it: one tracking store, one run, one data version."""

    def __init__(self, root: Path, params: Params, run_id: str, data_version: str, split_file: Path, items: Path):
        self.root, self.params, self.run_id, self.data_version = root, params, run_id, data_version
        self.split_file, self.items = split_file, items
        self.mlf = client(root)

    def log(self, bundle: Path, family: str, per_user: Path, weights_md5: str) -> Logged:
        """Log ``family``'s pyfunc and per-user results in a ``promote/<family>`` run nested in the promote run,
        its metrics (means on ``registry.split``) under its model id, and link it to its training run."""
        from mlflow.entities import LoggedModelOutput, Metric

        promote = self.promote_run
        tags = {k: v for k, v in promote.data.tags.items() if not k.startswith("mlflow.")}
        tags |= {"mlflow.parentRunId": self.run_id, "stage": "promote", "model": family}
        tags["mlflow.source.name"] = promote.data.tags.get("mlflow.source.name", "s2gr stage promote")
        run_id = self.mlf.create_run(promote.info.experiment_id, run_name=f"promote/{family}", tags=tags).info.run_id
        try:
            uri = log_recommender(self.root, run_id, bundle, family)
            model_id = uri.removeprefix("models:/")
            self.mlf.log_artifact(run_id, str(per_user), artifact_path="evaluation")
            split = self.params.registry.split
            means = read_per_user(per_user).query("split == @split").drop(columns=["user_id", "split"]).mean()
            now = int(time.time() * 1000)
            metrics = [Metric(f"{split}_{k}", float(v), now, 0, model_id=model_id) for k, v in means.items()]
            self.mlf.log_batch(run_id, metrics=metrics)
            trainer = self.training_run(promote.info.experiment_id, family, weights_md5)
            if trainer is not None:
                self.mlf.log_outputs(trainer, [LoggedModelOutput(model_id, step=0)])
                self.mlf.set_logged_model_tags(model_id, {"training_run_id": trainer})
        except BaseException:
            self.mlf.set_terminated(run_id, status="FAILED")
            raise
        self.mlf.set_terminated(run_id)
        return Logged(uri, f"runs:/{run_id}/evaluation/{per_user.name}", run_id, trainer)

    @functools.cached_property
    def promote_run(self) -> Any:
        """The promote stage's run, read once: each family's run copies its tags and experiment."""
        return self.mlf.get_run(self.run_id)

    def training_run(self, experiment_id: str, family: str, weights_md5: str) -> str | None:
        """The latest finished ``train_<family>`` run that published weights with this md5, or None."""
        runs = self.mlf.search_runs(
            [experiment_id],
            filter_string=f"tags.stage = 'train_{family}' and tags.{WEIGHTS_TAG} = '{weights_md5}' "
            "and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        return runs[0].info.run_id if runs else None

    def register(
        self,
        name: str,
        model_uri: str,
        family: str,
        results_uri: str,
        source: str = "",
        content: str = "",
        run_id: str = "",
    ) -> Any:
        """A new version of ``name`` (created if missing), tagged with the run, data version, commit."""
        from mlflow.exceptions import MlflowException

        with contextlib.suppress(MlflowException):  # exists already
            self.mlf.create_registered_model(name, description="s2gr recommender; aliases @champion, @challenger")
        tags = {
            TAG_RUN: self.run_id,
            TAG_DATA: self.data_version,
            TAG_FAMILY: family,
            TAG_RESULTS: results_uri,
            TAG_MODEL: model_uri,
            "git_commit": git_info(self.root)["git_commit"],
            **({TAG_SOURCE: source} if source else {}),
            **({TAG_CONTENT: content} if content else {}),
        }
        # a tracking server checks that a logged model's version names it (a local store does not)
        model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
        run_id = run_id or self.run_id
        return self.mlf.create_model_version(name, source=model_uri, run_id=run_id, tags=tags, model_id=model_id)

    def champion(self, name: str) -> Scored | None:
        version = alias_version(self.mlf, name, CHAMPION)
        return None if version is None else self.scored(version)

    def scored(self, version: Any) -> Scored:
        """``version``'s per-user results: its own if evaluated on this data version, else re-scored now."""
        import mlflow

        if version.tags.get(TAG_DATA) == self.data_version:
            with tempfile.TemporaryDirectory() as tmp:
                path = mlflow.artifacts.download_artifacts(
                    version.tags[TAG_RESULTS], dst_path=tmp, tracking_uri=tracking_uri(self.root)
                )
                return Scored(version, read_per_user(Path(path)))
        from mlflow.exceptions import MlflowException

        keys = pd.read_parquet(self.items, columns=["item_key"])["item_key"].astype(str).to_numpy()
        uri = f"models:/{version.name}/{version.version}"
        note = f"{version.name}/{version.version} re-scored on data {self.data_version[:8]} "
        note += f"(it was evaluated on {version.tags.get(TAG_DATA, '?')[:8]})"
        try:
            return Scored(version, rescore(uri, self.params, self.split_file, keys), note)
        except MlflowException as exc:  # e.g. the catalogue changed: items it has never seen
            return Scored(version, None, f"{note}: it cannot rank the current data ({exc.message.splitlines()[-1]})")

    def gate(self, name: str, challenger: Scored, champion: Scored | None) -> Decision:
        """Move ``@challenger`` to the challenger, and ``@champion`` too when it passes the gate."""
        self.mlf.set_registered_model_alias(name, CHALLENGER, challenger.version.version)
        decision = decide(challenger.results, champion.results if champion else None, self.params.registry)
        if champion is not None and champion.results is None:
            decision = replace(decision, reason=f"replaces a champion that {champion.note.split(': ', 1)[-1]}")
        if decision.promote:
            self.mlf.set_registered_model_alias(name, CHAMPION, challenger.version.version)
        return decision
