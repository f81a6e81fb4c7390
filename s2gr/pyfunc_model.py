"""The MLflow pyfunc of every served recommender, logged as "models from code".

MLflow copies this file into each logged model and runs it on load; it pickles nothing. The
model's one artifact is a bundle folder (``s2gr_core.serving.bundle``) read with plain Parquet,
JSON and ``torch.load(weights_only=True)``.

Input: one row per request with exactly one of ``user`` (a known user key), ``history`` (item keys,
oldest first) or ``item_ids`` (the project's ids). Params: ``k``, ``exclude_history``. Output: one
row per request with ``item_ids``, ``item_keys``, ``titles``, ``scores`` (best first). A request the
model cannot answer raises ``INVALID_PARAMETER_VALUE``: HTTP 400 from ``mlflow models serve``, with a
message that names the request, the field and the value.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PythonModel

FIELDS = {"user": "user", "history": "history_keys", "item_ids": "history_ids"}


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def requests_from_frame(frame: Any) -> list:
    """The rows of a DataFrame (columns user / history / item_ids, any may be absent) as requests."""
    from s2gr_core.serving.recommender import Request, RequestError

    unknown = [c for c in frame.columns if c not in FIELDS]
    if unknown:
        raise RequestError(f"unknown request field(s) {unknown}; a request has one of {list(FIELDS)}")
    out = []
    for index, row in enumerate(frame.to_dict("records")):
        given: dict[str, Any] = {}
        for column, field in FIELDS.items():
            value = row.get(column)
            if _missing(value):
                continue
            if column == "user":
                given[field] = str(value)
            elif isinstance(value, str | bytes) or not hasattr(value, "__iter__"):
                raise RequestError(f"request {index}: {column} must be a list, got {value!r}")
            else:
                given[field] = tuple(str(v) for v in value) if column == "history" else tuple(int(v) for v in value)
        out.append(Request(**given))
    return out


class RecommenderModel(PythonModel):
    # The signature is explicit (s2gr/registry.py) and MLflow enforces it before predict; its wrapping of
    # predict for type-hint validation (and the warning that asks for hints) is not wanted here.
    _skip_type_hint_validation = True

    def load_context(self, context: Any) -> None:
        from s2gr_core.serving.recommender import Recommender

        self.recommender = Recommender(Path(context.artifacts["bundle"]))

    # model_input has no hint on purpose: MLflow would try to derive a second signature from it
    def predict(self, context: Any, model_input, params: dict[str, Any] | None = None) -> Any:
        import pandas as pd

        from s2gr_core.serving.recommender import RequestError

        params = params or {}
        try:
            ranked = self.recommender.recommend(
                requests_from_frame(pd.DataFrame(model_input)), params.get("k"), params.get("exclude_history")
            )
        except RequestError as exc:
            raise MlflowException.invalid_parameter_value(str(exc)) from None
        return pd.DataFrame(
            {
                "item_ids": [r.item_ids for r in ranked],
                "item_keys": [r.item_keys for r in ranked],
                "titles": [r.titles for r in ranked],
                "scores": [r.scores for r in ranked],
            }
        )


mlflow.models.set_model(RecommenderModel())
