"""Small helpers every model shares: padding, seeding, devices, top-K lists, memory."""

from __future__ import annotations

import random
import resource
import sys
from pathlib import Path

import numpy as np
import torch

from s2gr_core.cores import available_cores


def pad_right(sequences: list[np.ndarray], max_len: int, offset: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad the last ``max_len`` items of each sequence; ids shifted by ``offset`` (0 = padding).

    Returns ``(tokens, lengths)`` of shapes (B, max_len) and (B,).

    >>> pad_right([np.array([4, 5, 6]), np.array([7])], max_len=2)
    (array([[6, 7],
           [8, 0]]), array([2, 1]))
    """
    lengths = np.array([min(len(s), max_len) for s in sequences], dtype=np.int64)
    tokens = np.zeros((len(sequences), max_len), dtype=np.int64)
    for row, (seq, n) in enumerate(zip(sequences, lengths, strict=True)):
        if n:
            tokens[row, :n] = np.asarray(seq[-n:]) + offset
    return tokens, lengths


def length_bucketed_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Batches of example indices with similar lengths, in random order.

    Examples are sorted by length (random order among equal lengths), cut into batches, and the
    batches shuffled; each batch can then be cropped to its longest example, which saves most of
    the encoder work on short histories. Every example is in exactly one batch.

    >>> [b.tolist() for b in length_bucketed_batches(np.array([3, 1, 3, 1]), 2, np.random.default_rng(0))]
    [[3, 1], [2, 0]]
    """
    order = np.lexsort((rng.random(len(lengths)), lengths))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def shuffled_batches(n: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A random permutation of ``range(n)`` cut into batches (no length bucketing)."""
    order = rng.permutation(n)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def epoch_batches(
    lengths: np.ndarray, batch_size: int, rng: np.random.Generator, by_length: bool, drop_last: bool = False
) -> list[np.ndarray]:
    """One epoch's batches of example indices: length-bucketed or plainly shuffled.

    ``drop_last`` leaves out the one partial batch (compiled steps then see one batch size, and a
    CUDA graph is never re-recorded for it); with length buckets it holds the longest histories,
    drawn at random among equal lengths, so a different handful of examples sits out each epoch.

    >>> [len(b) for b in epoch_batches(np.array([3, 1, 2, 1, 5]), 2, np.random.default_rng(0), True, True)]
    [2, 2]
    """
    if by_length:
        batches = length_bucketed_batches(lengths, batch_size, rng)
    else:
        batches = shuffled_batches(len(lengths), batch_size, rng)
    if drop_last and len(batches) > 1:
        batches = [b for b in batches if len(b) == batch_size]
    return batches


def crop_width(longest: int, limit: int, multiple: int = 1) -> int:
    """Columns a batch keeps: its longest example rounded up to ``multiple`` (a small fixed set of
    shapes for compiled steps), at least 1, at most ``limit``.

    >>> crop_width(5, 20, 4), crop_width(0, 20), crop_width(19, 20, 8)
    (8, 1, 20)
    """
    return max(1, min(limit, -(-longest // multiple) * multiple))


def decode_chunks(lengths: np.ndarray, batch_size: int, by_length: bool = True) -> list[np.ndarray]:
    """Row indices in chunks of ``batch_size``: shortest history first when ``by_length`` (so each
    chunk can be cropped), else in order. The caller writes each chunk's results back at these
    indices, so the output stays in user order either way.

    >>> [c.tolist() for c in decode_chunks(np.array([5, 1, 3]), 2)]
    [[1, 2], [0]]
    """
    order = np.argsort(lengths, kind="stable") if by_length else np.arange(len(lengths))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but no GPU is visible; use 'auto' or 'cpu'")
    return torch.device(name)


def set_threads(threads: int) -> int:
    """Sets torch's intra-op threads: ``threads``, or with 0 every core this process may use."""
    n = threads or available_cores()
    torch.set_num_threads(n)
    return n


def top_k_items(scores: torch.Tensor, k: int, exclude: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` item ids and scores per row of ``scores`` (B, N), best first.

    ``exclude`` (B, H) lists item ids to drop (-1 = nothing). Equal scores are ordered
    by ascending item id, so lists are deterministic.
    """
    if exclude is not None:
        scores = scores.clone()
        rows = torch.arange(scores.shape[0], device=scores.device)[:, None].expand_as(exclude)
        keep = exclude >= 0
        scores[rows[keep], exclude[keep]] = float("-inf")
    top_scores, top_items = torch.topk(scores, k, dim=1)
    # topk cuts ties at the k-th score arbitrarily: rows where it cut a tie get a stable full
    # sort (ascending id among equal scores). Rare with real scores, so few rows pay for it.
    threshold = top_scores[:, -1:]
    cut = (scores == threshold).sum(dim=1) > (top_scores == threshold).sum(dim=1)
    if cut.any():
        order = torch.argsort(-scores[cut], dim=1, stable=True)[:, :k]
        top_items[cut] = order
        top_scores[cut] = scores[cut].gather(1, order)
    # stable re-sort by (-score, item id): sort by id, then stable sort by score
    by_id = torch.argsort(top_items, dim=1)
    top_items, top_scores = top_items.gather(1, by_id), top_scores.gather(1, by_id)
    by_score = torch.argsort(-top_scores, dim=1, stable=True)
    return top_items.gather(1, by_score), top_scores.gather(1, by_score)


PROC_SELF = Path("/proc/self")


def peak_memory_mb(device: torch.device) -> float:
    """The GPU allocator's peak, or the process's resident high-water mark (since
    :func:`reset_peak_memory` where the kernel can reset it)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    if (PROC_SELF / "status").is_file():  # Linux: VmHWM, in kB; unlike ru_maxrss it can be reset
        status = (PROC_SELF / "status").read_text().splitlines()
        return int(next(line.split()[1] for line in status if line.startswith("VmHWM"))) / 2**10
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def reset_peak_memory(device: torch.device) -> None:
    """Start :func:`peak_memory_mb` afresh (GPU; Linux CPU: "5" in clear_refs resets VmHWM)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    elif (PROC_SELF / "clear_refs").exists():
        (PROC_SELF / "clear_refs").write_text("5")
