"""Turn a :class:`SeqToSID` into top-K item lists with the constrained beam search.

The decoding state starts with one row per user (the root is shared, so the first position,
and S2GR's first thinking step, run once per user). Each beam then carries its own
self-attention keys/values and, for S2GR, the state its next thinking vector starts from; the search reorders them
by parent beam after every position, so nothing is recomputed. The cross-attention
keys/values stay one per user, read by all of its beams.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch.nn import functional as F

from s2gr_core.models.gr.beam import DecodingTables, beam_search
from s2gr_core.models.gr.layers import BufferPool
from s2gr_core.models.gr.model import SeqToSID
from s2gr_core.models.runtime import Runtime, run_guarded


def reorder_cache(cache: dict[str, Any], parent: torch.Tensor) -> dict[str, Any]:
    """Row i of the new cache is row parent[i] of the old one.

    A parent is always a beam of the same user, and a user's beams share one history, so the
    cross-attention keys/values and the mask need no reordering: only the per-beam state moves.
    """
    return {
        "memory_kv": cache["memory_kv"],
        "mask": cache["mask"],
        "self_kv": [layer.reorder(parent) for layer in cache["self_kv"]],
        "h": cache["h"].index_select(0, parent),
        "step": cache["step"],
    }


DecodeStates = Callable[[torch.Tensor, int, dict[str, Any]], torch.Tensor]


def make_step(model: SeqToSID, decode_states: DecodeStates | None = None):
    """The beam-search step of ``model``: log-probabilities of SID position ``position`` per beam.

    ``decode_states`` (default ``model.decode_states``) runs the decoder; a compiled one may be given.
    """
    spec = model.spec
    run = decode_states or model.decode_states

    def advance(x: torch.Tensor, cache: dict[str, Any]) -> torch.Tensor:
        """One decoder step for x (N, D): its output (N, D); the state fed back stays in the cache."""
        out, cache["h"] = model.outputs(run(x[:, None], cache["step"], cache)[:, 0])
        cache["step"] += 1
        return out

    def step(position: int, last: torch.Tensor, cache: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        n = last.shape[0]
        x = model.bos.expand(n, -1) if position == 0 else model.code_embedding(position - 1, last)
        h = advance(x, cache)
        if spec.mode == "s2gr":
            if spec.reasoning_first:
                if position == 0:  # all thinking vectors first, chained
                    for level in range(spec.levels):
                        h = advance(model.thought(cache["h"], level), cache)
            elif position < spec.levels:  # think about level `position`, inside the same beam
                h = advance(model.thought(cache["h"], position), cache)
        # scores add up over positions: fp32 whatever the precision of the model's matmuls
        return F.log_softmax(model.logits(position, h).float(), dim=-1), cache

    return step


@torch.no_grad()
def recommend(
    model: SeqToSID,
    history: torch.Tensor,
    tables: DecodingTables,
    beam: int,
    users: torch.Tensor | None = None,
    decode_states: DecodeStates | None = None,
    pool: BufferPool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """history (B, H', P) -> the ``beam`` best items (B, W) and their log-probabilities, best first.

    ``pool`` lends the beams' cache memory; pass one pool to consecutive calls to reuse it.
    """
    was = model.training
    model.eval()
    pool = pool if pool is not None else BufferPool()
    try:
        memory, mask = model.encode(history, users)
        cache = model.new_cache(memory, mask, preallocate=True, pool=pool)
        step = make_step(model, decode_states)
        return beam_search(step, reorder_cache, cache, tables, history.shape[0], beam)
    finally:
        pool.reclaim()  # nothing returned is pooled memory
        model.train(was)


class Decoder:
    """:func:`recommend` under a runtime: its precision, and its compiled decoder step when it compiles
    (a failed compilation decodes the batch again eagerly and stays eager), reusing one pool of cache
    memory across its calls."""

    def __init__(self, model: SeqToSID, runtime: Runtime | None = None):
        self.model, self.runtime, self.pool = model, runtime, BufferPool()
        self.compiled = runtime.step(model.decode_states, "decoder step") if runtime is not None else None

    def __call__(
        self, history: torch.Tensor, tables: DecodingTables, beam: int, users: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        def body() -> tuple[torch.Tensor, torch.Tensor]:
            with self.runtime.autocast() if self.runtime is not None else contextlib.nullcontext():
                return recommend(self.model, history, tables, beam, users, self.compiled, self.pool)

        return run_guarded(self.compiled, body)
