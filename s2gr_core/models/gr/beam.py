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

    @property
    def positions(self) -> int:
        return len(self.children)


def beam_search(
    step: Step, reorder: Reorder, cache: Any, tables: DecodingTables, batch: int, beam: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``beam`` items per user -> (item ids (B, W), log-probabilities (B, W)), best first.

    Only SIDs of real items can come out, and no item twice (distinct beams are distinct
    prefixes). Where fewer than W items are reachable the tail is item -1 with score -inf.
    """
    device = tables.children[0].device
    scores = torch.full((batch, beam), float("-inf"), device=device)
    scores[:, 0] = 0.0  # every beam starts at the root: expand one copy only
    state = torch.zeros(batch * beam, dtype=torch.int64, device=device)
    last = torch.full((batch * beam,), -1, dtype=torch.int64, device=device)
    offsets = (torch.arange(batch, device=device) * beam)[:, None]
    for position, table in enumerate(tables.children):
        logp, cache = step(position, last, cache)
        vocab = table.shape[1]
        allowed = table[state] >= 0  # (B*W, V)
        logp = logp.masked_fill(~allowed, float("-inf"))
        total = (scores.reshape(-1, 1) + logp).reshape(batch, beam * vocab)
        scores, flat = torch.topk(total, beam, dim=1)  # (B, W)
        parent = (flat // vocab + offsets).reshape(-1)
        code = (flat % vocab).reshape(-1)
        state = table[state[parent], code]
        alive = torch.isfinite(scores).reshape(-1)
        state = torch.where(alive, state, torch.zeros_like(state))  # dead beams park on a valid state
        last = code
        cache = reorder(cache, parent)
    items = torch.where(
        torch.isfinite(scores), state.reshape(batch, beam), torch.full_like(scores, -1, dtype=torch.int64)
    )
    return items, scores
