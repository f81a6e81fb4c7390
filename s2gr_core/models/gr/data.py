"""Examples for the sequence-to-SID models, built without Python loops over users.

Every position t ≥ 1 of a training sequence is one example: history = the ``max_history``
items before it (left-padded with -1), target = the item at t. Histories are kept as item
ids and turned into SID tensors per batch (``sid_table`` indexed on the device), so memory stays (E, H).

>>> training_examples([np.array([5, 7, 9])], max_history=2)
(array([[-1,  5],
       [ 5,  7]]), array([7, 9]))
"""

from __future__ import annotations

import numpy as np
import torch


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
