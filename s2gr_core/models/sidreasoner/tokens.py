"""SIDs as text: one token per code, named by position and code (``<a_12><b_200><c_7><d_0>``).

Position p (0-based) is the letter ``chr(ord('a') + p)``; our SIDs have L levels plus the de-dup
code, so with L = 3 an item is 4 tokens (the public index has 3 and tolerates collisions).

>>> sid_text([5, 56, 63, 0])
'<a_5><b_56><c_63><d_0>'
>>> sid_tokens((2, 3))
[['<a_0>', '<a_1>'], ['<b_0>', '<b_1>', '<b_2>']]
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

THINK, END_THINK = "<think>", "</think>"
# any angle-bracket token, as the published reward reads them (a SID code, </think>, or junk)
ANGLE_TOKEN = re.compile(r"<[^<>\s]*>")


def code_token(position: int, code: int) -> str:
    return f"<{chr(ord('a') + position)}_{int(code)}>"


def sid_text(codes: Sequence[int]) -> str:
    """One item's SID as its tokens, concatenated with no separator."""
    return "".join(code_token(p, c) for p, c in enumerate(codes))


def sid_texts(sids: np.ndarray) -> list[str]:
    """(N, P) SIDs -> N strings, row i = item i."""
    return [sid_text(row) for row in sids.tolist()]


def sid_tokens(vocab: Sequence[int]) -> list[list[str]]:
    """Every code token, per position: ``vocab[p]`` codes at position p (the decoding tables' widths)."""
    return [[code_token(p, c) for c in range(v)] for p, v in enumerate(vocab)]
