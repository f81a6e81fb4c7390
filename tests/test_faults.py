"""Fault injection: stages SIGKILLed mid-run, then `dvc repro` again; a second `dvc repro` at once.

Every kind of stage that writes outputs (data, embedding, codebook, SIDs, each trainer, evaluation)
is killed just before it publishes one (``S2GR_FAULT``, see ``s2gr_core.io``): the last good outputs
must survive byte for byte, nothing half-written may appear, and the re-run must end byte-identical
to the uninterrupted run (training resumes from its last checkpoint instead of starting over).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import re
import shutil
import subprocess
from collections.abc import Iterator
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


@contextlib.contextmanager
def small_filesystem(folder: Path, size: str) -> Iterator[None]:
    """A real tmpfs of ``size`` mounted over ``folder`` (its files copied in first), unmounted after.

    Needs CAP_SYS_ADMIN (root on the project's machines and CI); elsewhere the test is skipped.
    """
    saved = folder.parent / f"{folder.name}.saved"
    shutil.copytree(folder, saved)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        shutil.rmtree(saved)
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        shutil.copytree(saved, folder, dirs_exist_ok=True)
        yield
    finally:
        subprocess.run(["umount", "--lazy", str(folder)], check=True)
        shutil.rmtree(saved)


def fill(folder: Path) -> None:
    """Write a filler file in ``folder`` until its filesystem has no byte left."""
    with open(folder / "filler", "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc


@pytest.mark.parametrize("fault", ["full disk", "read-only folder"])
def test_a_stage_on_a_full_or_read_only_filesystem_says_so_and_keeps_its_outputs(project: Path, fault: str) -> None:
    """The split's output folder on a real tiny filesystem that is full, or mounted read-only: the
    stage fails naming the output and the reason, and the last good tables are untouched."""
    first = dvc(project, "repro", "split")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    folder = project / "data" / "split"
    published = {p.name: p.read_bytes() for p in folder.iterdir()}
    reason = "No space left on device" if fault == "full disk" else "Read-only file system"
    with small_filesystem(folder, "4m"):
        if fault == "full disk":
            fill(folder)
        else:
            subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        # through DVC (a read-only folder is refused by DVC itself, which names the file) and the stage alone
        repro = dvc(project, "repro", "--force", "--single-item", "split")
        said = repro.stdout + repro.stderr
        assert repro.returncode != 0 and reason in said and str(folder / "train.parquet") in said, said[-3000:]
        env = project_env(project, S2GR_TRACKING="off")
        alone = subprocess.run(
            [str(BIN / "s2gr"), "stage", "split"], cwd=project, env=env, capture_output=True, text=True
        )
        assert alone.returncode == 3, alone.stderr[-3000:]  # an environment fault, not rejected input
        message = re.search(r"\[split\] FAILED: OutputWriteError: (.*)", alone.stderr)
        assert message is not None, alone.stderr[-3000:]
        assert message[1].startswith(f"{folder / 'train.parquet'}: cannot write it (") and reason in message[1]
        assert message[1].endswith("; the previous output is kept")
        assert {p.name: p.read_bytes() for p in folder.iterdir() if p.name != "filler"} == published
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == published  # the real disk's copy, as it was
