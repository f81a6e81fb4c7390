"""What every config section shares: the error type and field help."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


class ConfigError(ValueError):
    """A parameter in ``params.yaml`` is missing, unknown or out of range."""


def _help(text: str) -> Any:
    return field(metadata={"help": text})


def require(condition: bool, key: str, message: str) -> None:
    """Raise ``ConfigError('key: message')`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(f"{key}: {message}")


@dataclass(frozen=True, slots=True)
class SpeedConfig:
    """How a model's training and decoding run; shared by SASRec, TIGER and S2GR."""

    precision: Literal["fp32", "bf16"] = _help(
        "Matmul/attention precision: 'bf16' autocasts them (weights and losses stay fp32) on a GPU or a CPU "
        "with native bf16 (AVX512-BF16/AMX); elsewhere the run says so and stays fp32."
    )
    compile: bool = _help(
        "torch.compile the training and decoding steps (CUDA graphs on a GPU); falls back to eager with a "
        "warning where the platform cannot compile."
    )
    length_buckets: bool = _help(
        "Batch examples of similar history length and crop each batch's padding (exact: same results, less work)."
    )
