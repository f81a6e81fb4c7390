"""Fault injection: stages SIGKILLed mid-run, then `dvc repro` again; a second `dvc repro` at once.

Every kind of stage that writes outputs (data, embedding, codebook, SIDs, each trainer, evaluation)
is killed just before it publishes one (``S2GR_FAULT``, see ``s2gr_core.io``): the last good outputs
must survive byte for byte, nothing half-written may appear, and the re-run must end byte-identical
to the uninterrupted run (training resumes from its last checkpoint instead of starting over).
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

import pytest

from s2gr_core.io import FAULT_ENV
from tests.conftest import BIN, project_env

pytestmark = pytest.mark.faults

# stage, the output whose n-th publish is pre-empted by SIGKILL, n
KILLS = [
    ("split", "valid.parquet", 1),
    ("embed", "embed.json", 1),  # unchanged texts reuse the embeddings: the metrics file is its one write
    ("codebook", "codebook", 1),
    ("sids", "sids", 1),
    ("train_sasrec", "last.pt", 3),  # after two epochs' checkpoints
    ("train_tiger", "last.pt", 2),  # after the first epoch's checkpoint (the tiny budget is 2 epochs)
    ("train_s2gr", "last.pt", 2),
    ("evaluate_sasrec", "sasrec_per_user.parquet", 1),
]
RESUMED = {"train_sasrec": 2, "train_tiger": 1, "train_s2gr": 1}  # the epoch each re-run resumes from
# deterministic outputs compared byte for byte, every model folder included (the resume checkpoints,
# which record timings, are scratch state in checkpoints/, not outputs)
OUTPUTS = ("data/split", "data/embed", "data/sids", "models", "predictions", "reports/eval")


def temporary(path: Path) -> bool:
    """Inside a writer's temporary sibling (``.<name>.<pid>.<random>.tmp``): not a published output."""
    return any(part.startswith(".") and part.endswith(".tmp") for part in path.parts)


def digests(root: Path) -> dict[str, str]:
    """md5 of every published file of OUTPUTS (a killed writer's temporary is cleaned by the next write)."""
    files = [p for rel in OUTPUTS for p in ([root / rel] if (root / rel).is_file() else (root / rel).rglob("*"))]
    return {
        str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in files
        if p.is_file() and not temporary(p)
    }


def sigkilled(log: str) -> bool:
    """DVC reports a SIGKILLed command as -9 when it exec's it, as 137 (128 + 9) when a shell waits on it."""
    return re.search(r"exited with (-9|137)\b", log) is not None


def dvc(root: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    cmd = [str(BIN / "dvc"), *args]
    return subprocess.run(
        cmd, cwd=root, env=project_env(root, S2GR_TRACKING="off", **env), capture_output=True, text=True, timeout=600
    )


def test_killed_stages_lose_nothing_and_resume_to_the_same_bytes(project: Path) -> None:
    # the very first encoding, killed as it publishes: no embeddings appear, half-written or whole
    killed = dvc(project, "repro", "embed", **{FAULT_ENV: "embed:1"})
    assert killed.returncode != 0 and (project / "data" / "processed" / "items.parquet").is_file()
    assert not (project / "data" / "embed").exists()
    first = dvc(project, "repro", "evaluate_sasrec", "train_tiger", "train_s2gr")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    reference = digests(project)
    assert len(reference) >= 10

    for stage, output, nth in KILLS:
        killed = dvc(project, "repro", "--force", "--single-item", stage, **{FAULT_ENV: f"{output}:{nth}"})
        assert killed.returncode != 0, f"{stage} was not killed:\n{killed.stdout[-2000:]}"
        assert sigkilled(killed.stdout + killed.stderr), killed.stderr
        assert digests(project) == reference, f"killing {stage} changed a published output"
        again = dvc(project, "repro", "--force", "--single-item", stage)
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        if stage in RESUMED:
            assert f"resuming from epoch {RESUMED[stage]} checkpoint" in again.stdout
        assert digests(project) == reference, f"{stage} re-run after a kill differs from the uninterrupted run"
    leftovers = [p for p in project.rglob(".*.tmp") if ".dvc" not in p.parts]  # every re-run cleaned up
    assert not leftovers, leftovers


def test_a_second_dvc_repro_meets_dvcs_lock_error(project: Path) -> None:
    from dvc.lock import Lock

    lock = Lock(str(project / ".dvc" / "tmp" / "lock"))
    (project / ".dvc" / "tmp").mkdir(exist_ok=True)
    lock.lock()  # what a running `dvc repro` holds
    try:
        second = dvc(project, "repro", "split")
    finally:
        lock.unlock()
    assert second.returncode != 0
    assert "Unable to acquire lock" in second.stdout + second.stderr
    assert not (project / "data").exists()  # it ran nothing
