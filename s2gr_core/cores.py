"""How many cores a process may use, in one place (torch-free: the Prefect flow imports it too)."""

from __future__ import annotations

import os

CORES_VARIABLE = "S2GR_CORES"


def available_cores() -> int:
    """Cores this process may use: ``S2GR_CORES`` where a scheduler set it (the pipeline flow does
    for stages it runs side by side), else the CPUs this process may run on (its affinity, which
    ``taskset`` and container cpusets narrow; ``os.cpu_count`` would count the whole machine)."""
    if value := os.environ.get(CORES_VARIABLE):
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"{CORES_VARIABLE}={value!r}: must be a whole number of cores >= 1")
        return int(value)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
