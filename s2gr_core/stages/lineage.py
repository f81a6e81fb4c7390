"""Which parameters decide a stage's outputs, and a short fingerprint of their values.

The report pools seeds of one model into mean ± std; it must pool only runs whose
configuration is the same apart from the seed. "The same" is what DVC itself uses to
decide staleness: the params keys declared by the stage and by every stage upstream of
it in the registry's DAG. Example (ml-100k defaults)::

    upstream_params(STAGES, "evaluate_sasrec")
    -> ('data', 'data.name', 'evaluate', 'evaluate.ks', 'inference', 'sasrec', 'split', ...)
    config_fingerprint(params, STAGES, "evaluate_sasrec", ignore=("sasrec.seed",))
    -> '3f9a0c1d2b7e'   # unchanged by sasrec.seed, changed by sasrec.lr or split.max_history
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from s2gr_core.config import Params

if TYPE_CHECKING:
    from s2gr_core.stages.base import Stage


def upstream_params(stages: Iterable[Stage], name: str) -> tuple[str, ...]:
    """Params keys (sections or dotted keys) read by stage ``name`` or any stage it depends on, sorted."""
    stages = list(stages)
    by_name = {s.name: s for s in stages}
    if name not in by_name:
        raise KeyError(f"unknown stage {name!r}; stages: {', '.join(by_name)}")
    producer = {path: s.name for s in stages for path in (*s.outs.values(), *s.metrics.values())}
    keys: set[str] = set()
    seen: set[str] = set()
    todo = [name]
    while todo:
        stage = by_name[todo.pop()]
        if stage.name in seen:
            continue
        seen.add(stage.name)
        keys.update(stage.params)
        todo.extend(producer[p] for p in stage.deps.values() if p in producer)
    return tuple(sorted(keys))


def param_value(params: Params, key: str) -> Any:
    """The value of a section (as a dict) or of a dotted key, e.g. ``"split.max_history"`` -> 20."""
    value: Any = params
    for part in key.split("."):  # a dict section (gr) holds its keys as items
        value = value[part] if isinstance(value, dict) else getattr(value, part)
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


def config_fingerprint(params: Params, stages: Iterable[Stage], name: str, ignore: tuple[str, ...] = ()) -> str:
    """12 hex digits over every upstream param of ``name`` except the dotted keys in ``ignore``."""
    values = {key: param_value(params, key) for key in upstream_params(stages, name) if key not in ignore}
    for dotted in ignore:
        section, _, field = dotted.partition(".")
        if isinstance(values.get(section), dict):
            values[section].pop(field, None)
    blob = json.dumps(values, sort_keys=True, default=list)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
