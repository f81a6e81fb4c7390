"""Beam search constrained to the SIDs of real items, tensorised over batch × beam.

The decoding tables come from the ``sids`` stage (:class:`~s2gr_core.semantic.sids.SidTrie`):
``children[l][state, code]`` is the next prefix state (the item id after the last position),
-1 where no item continues the prefix. The model is seen only through ``step``, which
scores the next code of every live beam at once, so the same search serves TIGER and S2GR
(whose step runs its thinking position inside the beam before scoring the code).

Shapes: B users, W beams, V_l codes at position l, P positions (L levels + the de-dup code).

Example: with W ≥ the number of items the search keeps every valid prefix at every position,
so it returns the exhaustive ranking of all items by sequence log-probability.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

# step(position, last_codes (B*W,), cache) -> (log-probabilities (B*W, V_position), cache)
# ``last_codes`` is -1 at position 0 (nothing generated yet: the model feeds its BOS).
Step = Callable[[int, torch.Tensor, Any], tuple[torch.Tensor, Any]]
# reorder(cache, parent (B*W,)) -> cache whose row i is the old row parent[i]
Reorder = Callable[[Any, torch.Tensor], Any]


@dataclass(frozen=True, slots=True)
class DecodingTables:
    children: tuple[torch.Tensor, ...]  # position l: (states_l, V_l) int64

    @classmethod
    def from_numpy(cls, children: list, device: torch.device | str = "cpu") -> DecodingTables:
        return cls(tuple(torch.as_tensor(t, dtype=torch.int64, device=device) for t in children))

    def to(self, device: torch.device | str) -> DecodingTables:
        return DecodingTables(tuple(t.to(device) for t in self.children))

    @property
    def positions(self) -> int:
        return len(self.children)


def beam_search(
    step: Step, reorder: Reorder, cache: Any, tables: DecodingTables, batch: int, beam: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``beam`` items per user -> (item ids (B, W), log-probabilities (B, W)), best first.

    ``cache`` starts with one row per user: every beam begins at the root, so the first position
    is scored once per user and the first ``reorder`` fans each user out to its W beams.
    Only SIDs of real items can come out, and no item twice (distinct beams are distinct
    prefixes). Where fewer than W items are reachable the tail is item -1 with score -inf.
    """
    device = tables.children[0].device
    scores = torch.zeros(batch, 1, device=device)  # (B, width): width 1 until the first code
    state = torch.zeros(batch, dtype=torch.int64, device=device)
    last = torch.full((batch,), -1, dtype=torch.int64, device=device)
    for position, table in enumerate(tables.children):
        logp, cache = step(position, last, cache)
        width, vocab = scores.shape[1], table.shape[1]
        allowed = table[state] >= 0  # (B*width, V)
        logp = logp.masked_fill(~allowed, float("-inf"))
        total = (scores.reshape(-1, 1) + logp).reshape(batch, width * vocab)
        if total.shape[1] < beam:  # fewer candidates than beams: the rest are dead from the start
            total = torch.nn.functional.pad(total, (0, beam - total.shape[1]), value=float("-inf"))
        scores, flat = torch.topk(total, beam, dim=1)  # (B, W)
        # a padded candidate is dead: clamp so its (unused) parent and code stay in range
        flat = flat.clamp(max=width * vocab - 1)
        parent = (flat // vocab + (torch.arange(batch, device=device) * width)[:, None]).reshape(-1)
        code = (flat % vocab).reshape(-1)
        state = table[state[parent], code]
        alive = torch.isfinite(scores).reshape(-1)
        state = torch.where(alive, state, torch.zeros_like(state))  # dead beams park on a valid state
        last = code
        if position + 1 < tables.positions:  # after the last position nothing reads the cache
            cache = reorder(cache, parent)
    items = torch.where(
        torch.isfinite(scores), state.reshape(batch, beam), torch.full_like(scores, -1, dtype=torch.int64)
    )
    return items, scores
