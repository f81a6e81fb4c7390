"""Training windows for SASRec from the split's training sequences.

Every position of a training sequence predicts the next item (all prefixes,
METHOD.md §2) with up to ``max_len`` items of context. Sequences longer than
``max_len + 1`` are cut into windows overlapping by half; a target is counted in
exactly one window, the first that contains it, so its context is at least
``max_len // 2`` items (or its whole history near the start).

Example (max_len=4, sequence [a b c d e f g])::

    window 0: inputs a b c d   targets b c d e   (all counted)
    window 1: inputs c d e f   targets d e f g   (d, e already counted -> only f, g)
"""

from __future__ import annotations

import numpy as np

IGNORE = -100  # torch's cross-entropy ignore_index


def training_windows(sequences: list[np.ndarray], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """``(inputs, targets)`` of shape (W, max_len): input tokens (item id + 1, 0 = pad) and
    target item ids (``IGNORE`` where not counted)."""
    stride = max(1, max_len // 2)
    inputs: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    for seq in sequences:
        n = len(seq) - 1  # number of (input, target) pairs
        if n < 1:
            continue
        starts = [*range(0, max(n - max_len, 0), stride), max(n - max_len, 0)]
        covered_until = 0  # first input index not yet counted
        for start in starts:
            stop = min(start + max_len, n)
            x = np.zeros(max_len, dtype=np.int64)
            y = np.full(max_len, IGNORE, dtype=np.int64)
            x[: stop - start] = seq[start:stop] + 1
            y[: stop - start] = seq[start + 1 : stop + 1]
            y[: max(covered_until - start, 0)] = IGNORE
            covered_until = stop
            inputs.append(x)
            targets.append(y)
    if not inputs:
        raise ValueError("no training pairs: every training sequence has fewer than 2 items")
    return np.stack(inputs), np.stack(targets)
