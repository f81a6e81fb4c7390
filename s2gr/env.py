"""Process environment for every entry point: telemetry off, state inside the project.

Imported first by the CLI and the flows, before mlflow / prefect / dvc are.
Values the user already set win (``setdefault``).
"""

from __future__ import annotations

import os
from pathlib import Path

import s2gr_core  # noqa: F401  (bounds OpenMP spin-waiting before anything loads torch)

TELEMETRY_OFF = {
    "DO_NOT_TRACK": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
    "HF_HUB_OFFLINE": "1",
    "GX_ANALYTICS_ENABLED": "false",
}

# MLflow's HTTP client retries 7 times with exponential backoff and a 120 s timeout: a tracking
# server that is down held a stage for minutes. A stage logs little; fail within seconds instead
# and let the caller (Prefect) retry the stage.
TRACKING_HTTP = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
}

ROOT_ENV = "S2GR_ROOT"


class ProjectNotFound(RuntimeError):
    pass


def find_root(start: Path | None = None) -> Path:
    """The project root: ``$S2GR_ROOT``, else the nearest folder up with params.yaml and dvc.yaml."""
    if os.environ.get(ROOT_ENV):
        return Path(os.environ[ROOT_ENV]).resolve()
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "params.yaml").is_file() and (folder / "dvc.yaml").is_file():
            return folder
    raise ProjectNotFound(f"no s2gr project (params.yaml + dvc.yaml) at or above {here}; set {ROOT_ENV}")


def configure(root: Path | None = None) -> None:
    for key, value in {**TELEMETRY_OFF, **TRACKING_HTTP}.items():
        os.environ.setdefault(key, value)
    if root is not None:
        os.environ.setdefault("PREFECT_HOME", str(root / ".prefect"))
