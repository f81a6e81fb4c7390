"""Examples for the sequence-to-SID models, built without Python loops over users.

Every position t ≥ 1 of a training sequence is one example: history = the ``max_history``
items before it (left-padded with -1), target = the item at t. Histories are kept as item
ids and turned into SID tensors per batch (``sid_table`` indexed on the device), so memory stays (E, H).

>>> training_examples([np.array([5, 7, 9])], max_history=2)
(array([[-1,  5],
       [ 5,  7]]), array([7, 9]))
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from s2gr_core.models.common import crop_width, decode_chunks


def left_padded(sequences: list[np.ndarray], max_history: int) -> np.ndarray:
    """The last ``max_history`` items of each sequence, right-aligned, -1 in front: (U, H)."""
    lengths = np.fromiter((min(len(s), max_history) for s in sequences), dtype=np.int64, count=len(sequences))
    out = np.full((len(sequences), max_history), -1, dtype=np.int64)
    flat = np.concatenate([np.asarray(s[len(s) - n :]) for s, n in zip(sequences, lengths, strict=True)] or [[]])
    rows = np.repeat(np.arange(len(sequences)), lengths)
    cols = (
        max_history
        - np.repeat(lengths, lengths)
        + (np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths))
    )
    out[rows, cols] = flat
    return out


def training_examples(sequences: list[np.ndarray], max_history: int) -> tuple[np.ndarray, np.ndarray]:
    """(histories (E, H) left-padded with -1, targets (E,)) for every next-item position."""
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    flat = np.concatenate(sequences).astype(np.int64) if len(sequences) else np.zeros(0, np.int64)
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    target_at = np.flatnonzero(np.arange(len(flat)) > starts)  # every position but the first of a sequence
    back = np.arange(max_history, 0, -1)
    index = target_at[:, None] - back[None]  # (E, H) positions of the history items
    valid = index >= starts[target_at][:, None]
    history = np.where(valid, flat[np.clip(index, 0, None)], -1)
    return history, flat[target_at]


def sid_table(sids: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """The SID table on ``device`` with a padding row first: (N + 1, P), row 0 all -1, row i + 1 the
    SID of item i. Index it with item ids + 1 to gather a batch where the model runs."""
    padded = np.concatenate([np.full((1, sids.shape[1]), -1, dtype=np.int64), sids])
    return torch.as_tensor(padded, device=device)


def sid_tensor(items: np.ndarray, sids: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """Item ids (..., H) with -1 padding -> SIDs (..., H, P) with -1 rows for padding."""
    return sid_table(sids, device)[torch.as_tensor(items + 1, device=device)]


def eval_batches(
    histories: list[np.ndarray],
    users: np.ndarray,
    sids: torch.Tensor,
    max_history: int,
    batch_size: int,
    device: torch.device,
    multiple: int = 1,
    length_buckets: bool = True,
    with_users: bool = False,
) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor | None]]:
    """(rows, history SIDs (b, H', P), users (b,) or None) per chunk of evaluation users.

    ``sids`` is :func:`sid_table`'s table on ``device``. With ``length_buckets`` users come shortest
    history first and each chunk is cropped to its longest history (rounded up to ``multiple``);
    position ids count from the right, so the model computes what the padded chunk gives. The
    caller writes results back at ``rows``, so its output stays in user order.
    """
    padded = left_padded(histories, max_history)
    lengths = (padded >= 0).sum(axis=1)
    for rows in decode_chunks(lengths, batch_size, length_buckets):
        width = padded.shape[1]
        if length_buckets:
            width = crop_width(int(lengths[rows].max()), width, multiple)
        hist = sids[torch.as_tensor(padded[rows, padded.shape[1] - width :] + 1, device=device)]
        yield rows, hist, torch.as_tensor(users[rows], device=device) if with_users else None
