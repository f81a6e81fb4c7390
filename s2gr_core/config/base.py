"""What every config section shares: the error type and field help."""

from __future__ import annotations

from dataclasses import field
from typing import Any


class ConfigError(ValueError):
    """A parameter in ``params.yaml`` is missing, unknown or out of range."""


def _help(text: str) -> Any:
    return field(metadata={"help": text})


def require(condition: bool, key: str, message: str) -> None:
    """Raise ``ConfigError('key: message')`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(f"{key}: {message}")
