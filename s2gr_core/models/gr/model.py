"""Sequence-to-SID model: TIGER (codes only) and S2GR (a thinking vector before each code).

Encoder input: the SIDs of the last ``max_history`` items, one token per code (token id =
1 + offset[position] + code, 0 = padding), or one token per item (the sum of its code
embeddings) with ``merge_codes``; optionally a hashed user token first.

Decoder, mode ``tiger``: inputs BOS, s1 … s_{P-1}; output p predicts s_{p+1}.
Mode ``s2gr``: inputs BOS, t1, s1, t2, s2, …, t_L, s_L where t_l = (decoder output at the
previous step) + p_l, a continuous vector, not a token; the output at t_l predicts s_l, the
output at s_L predicts the de-duplication code. ``thought_source`` picks the state fed back (the
normalised output, or the residual stream before the final norm) and ``thought_norm`` gives the
thinking input a LayerNorm of its own. ``reasoning_first`` instead feeds
BOS, t1 … t_L, s1 … s_L (the paper's weaker variant).

Shapes: B batch, H history items, P = L + 1 SID positions, D d_model, C codebook latent size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from s2gr_core.models.gr.layers import (
    BufferPool,
    DecoderLayer,
    Dims,
    Dropout,
    EncoderLayer,
    StepCache,
    matmul_attends,
)


@dataclass(frozen=True, slots=True)
class GRSpec:
    """Architecture (all sizes from params.yaml; the vocabulary from the sids stage)."""

    vocab: tuple[int, ...]  # codes per SID position (L levels, then the de-dup code)
    max_history: int
    d_model: int
    heads: int
    head_dim: int
    ffn: int
    encoder_layers: int
    decoder_layers: int
    dropout: float
    mode: Literal["tiger", "s2gr"]
    merge_codes: bool = False
    user_buckets: int = 0  # 0 = no user token
    reasoning_first: bool = False
    cluster_dim: int = 0  # C, size of the cluster centroids (s2gr)
    level_pos_init: float = 0.02  # std of p_l at init
    thought_position: bool = True  # the step position embedding on thinking inputs too
    thought_dropout: bool = True  # dropout on thinking inputs
    thought_detach: bool = False  # t_l = sg(h) + p_l
    thought_source: Literal["output", "residual"] = "output"  # the state h that t_l starts from
    thought_norm: bool = False  # t_l = LN_t(h) + p_l

    @property
    def thought_steps(self) -> tuple[int, ...]:
        """Decoder steps whose input is a thinking vector (s2gr): 1, 3, 5 … or 1 … L (reasoning first)."""
        if self.mode != "s2gr":
            return ()
        return tuple(range(1, 1 + self.levels)) if self.reasoning_first else tuple(range(1, 2 * self.levels, 2))

    @property
    def positions(self) -> int:
        return len(self.vocab)

    @property
    def levels(self) -> int:
        return len(self.vocab) - 1

    @property
    def dims(self) -> Dims:
        return Dims(self.d_model, self.heads, self.head_dim, self.ffn, self.dropout)


class SeqToSID(nn.Module):
    def __init__(self, spec: GRSpec):
        super().__init__()
        self.spec = spec
        # Python ints, not a tensor: slicing the head by a tensor offset is a host sync per position.
        self.code_offsets = tuple(int(o) for o in torch.tensor([0, *spec.vocab[:-1]]).cumsum(0))
        offsets = torch.tensor(self.code_offsets)
        self.register_buffer("offsets", offsets, persistent=False)
        total = sum(spec.vocab)
        d = spec.d_model
        self.enc_codes = nn.Embedding(1 + total, d, padding_idx=0)
        tokens = spec.max_history * (1 if spec.merge_codes else spec.positions) + (1 if spec.user_buckets else 0)
        self.enc_pos = nn.Embedding(tokens, d)
        self.user = nn.Embedding(spec.user_buckets, d) if spec.user_buckets else None
        self.encoder = nn.ModuleList(EncoderLayer(spec.dims) for _ in range(spec.encoder_layers))
        self.enc_norm = nn.LayerNorm(d)
        self.bos = nn.Parameter(torch.randn(d) * 0.02)
        self.dec_codes = nn.Embedding(total, d)
        steps = spec.positions if spec.mode == "tiger" else 2 * spec.levels + 1
        self.dec_pos = nn.Embedding(steps, d)
        self.decoder = nn.ModuleList(DecoderLayer(spec.dims) for _ in range(spec.decoder_layers))
        self.dec_norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, total, bias=False)
        self.drop = Dropout(spec.dropout)
        think = torch.zeros(steps, 1, dtype=torch.bool)
        think[list(spec.thought_steps)] = True
        self.register_buffer("thought_rows", think, persistent=False)  # (steps, 1): True = thinking input
        self.plain_thoughts = spec.thought_position and spec.thought_dropout  # thoughts treated like codes
        if spec.mode == "s2gr":
            self.level_pos = nn.Parameter(torch.randn(spec.levels, d) * spec.level_pos_init)  # p_l
            self.thought_norm = nn.LayerNorm(d) if spec.thought_norm else None
            self.align = nn.ModuleList(nn.Linear(d, spec.cluster_dim) for _ in range(spec.levels))
            self.interest = nn.ModuleList(DecoderLayer(spec.dims) for _ in range(max(1, spec.decoder_layers // 2)))
            self.interest_query = nn.Parameter(torch.randn(d) * 0.02)
            self.interest_norm = nn.LayerNorm(d)

    # ---- encoder -------------------------------------------------------------------------
    def encode(self, history: torch.Tensor, users: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """history (B, H', P) SIDs, -1 = padding -> memory (B, S, D), mask (B, 1, 1, S) True = real token.

        H' ≤ max_history: a batch may come cropped to its longest history (length bucketing).
        Position ids count from the right, so the most recent token has the same position
        whatever the crop, and a cropped batch computes what the fully padded one does.
        Example: max_history 20, P 4, H' 5 -> the 20 tokens take positions 60 … 79 (+1 with a user token).
        """
        if history.shape[1] > self.spec.max_history:
            raise ValueError(f"history holds {history.shape[1]} items; the model was built for {self.spec.max_history}")
        pad = history[..., 0] < 0  # (B, H')
        ids = torch.where(history < 0, torch.zeros_like(history), history + self.offsets + 1)
        emb = self.enc_codes(ids)  # (B, H', P, D)
        if self.spec.merge_codes:
            x, real = emb.sum(dim=2), ~pad
        else:
            x, real = emb.flatten(1, 2), (~pad).repeat_interleave(self.spec.positions, dim=1)
        x = x + self.enc_pos.weight[self.enc_pos.num_embeddings - x.shape[1] :]
        if self.user is not None:
            assert users is not None, "the model has a user token: pass users"
            x = torch.cat([(self.user(users % self.spec.user_buckets) + self.enc_pos.weight[0])[:, None], x], dim=1)
            real = torch.cat([torch.ones_like(real[:, :1]), real], dim=1)
        x = self.drop(x)
        mask = real[:, None, None, :]
        for layer in self.encoder:
            x = layer(x, mask)
        return self.enc_norm(x), mask

    def memory_cache(self, memory: torch.Tensor, layers: nn.ModuleList) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each layer's cross-attention keys, values (B, H, S, E); contiguous in training mode and
        wherever attention runs as batched matmuls (bf16 on a CPU).

        Batched matmuls (:func:`attention_dropped`) copy a permuted view on every read: S2GR's teacher
        forcing reads the keys in 4 passes (TIGER's in 1), and decoding once per step. Laid out once (and
        with zero-weight losses skipped) S2GR's fp32 CPU training ran 1.26x faster, and bf16 CPU decoding
        5-10% (docs/benchmarks.md). fp32 decoding's SDPA reads the views as they are, no slower."""
        kv = [layer.cross_attn.project_kv(memory) for layer in layers]
        if self.training or (kv and matmul_attends(kv[0][0], 0.0)):
            return [(k.contiguous(), v.contiguous()) for k, v in kv]
        return kv

    # ---- decoder -------------------------------------------------------------------------
    def code_embedding(self, position: int, codes: torch.Tensor) -> torch.Tensor:
        return self.dec_codes(codes + self.code_offsets[position])

    def logits(self, position: int, h: torch.Tensor) -> torch.Tensor:
        """Scores of the codes of SID position ``position`` from decoder outputs h (..., D)."""
        start = self.code_offsets[position]
        weight = self.head.weight[start : start + self.spec.vocab[position]]
        return h @ weight.T

    def decode_states(self, x: torch.Tensor, step: int, cache: dict[str, Any]) -> torch.Tensor:
        """Decoder steps ``step`` … ``step + T - 1`` at once: x (N, T, D) -> residual stream (N, T, D),
        before the final norm (:meth:`outputs` turns it into outputs and the state fed back).

        N is users or users × beams (the memory is per user: beams share it). The new steps
        attend to the cached ones and causally to each other, and are appended to the cache.
        """
        h = self.step_inputs(x, step)
        for i, layer in enumerate(self.decoder):
            h = layer(h, cache["memory_kv"][i], cache["mask"], past=cache["self_kv"][i])
        return h

    def outputs(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Residual states (..., D) -> (outputs the head scores, the state a thinking vector starts from).

        The two are one tensor unless ``thought_source`` is 'residual'."""
        out = self.dec_norm(states)
        return out, (states if self.spec.thought_source == "residual" else out)

    def chain_steps(self, x: torch.Tensor, step: int, cache: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`decode_states` then :meth:`outputs`: x (N, T, D) -> outputs, fed-back states (N, T, D)."""
        return self.outputs(self.decode_states(x, step, cache))

    def step_inputs(self, x: torch.Tensor, step: int) -> torch.Tensor:
        """Decoder inputs x (N, T, D) of steps ``step`` … as the first layer sees them: plus the step
        position embedding, then dropout; thinking inputs skip either when the spec says so."""
        pos = self.dec_pos.weight[step : step + x.shape[1]]
        if self.plain_thoughts:
            return self.drop(x + pos)
        think = self.thought_rows[step : step + x.shape[1]]  # (T, 1)
        h = x + (pos if self.spec.thought_position else pos.masked_fill(think, 0.0))
        return self.drop(h) if self.spec.thought_dropout else torch.where(think, h, self.drop(h))

    def thought(self, h: torch.Tensor, level: int) -> torch.Tensor:
        """t_l from the state h (N, D) fed back from the previous step: h + p_l, or LN_t(h) + p_l with
        ``thought_norm``; h under stop-gradient with ``thought_detach``."""
        h = h.detach() if self.spec.thought_detach else h
        return (self.thought_norm(h) if self.thought_norm is not None else h) + self.level_pos[level]

    @property
    def decoder_steps(self) -> int:
        """Decoder inputs per SID: BOS and the codes, plus one thinking vector per level (s2gr)."""
        return self.dec_pos.num_embeddings

    def new_cache(
        self, memory: torch.Tensor, mask: torch.Tensor, preallocate: bool = False, pool: BufferPool | None = None
    ) -> dict[str, Any]:
        """Decoding state for one row per user of memory (B, S, D).

        The cross-attention keys/values are projected once per user and never copied: the beams
        a search fans out to (rows i*W … of the self-attention state) all read user i's.
        ``preallocate`` (no-grad decoding only) writes the self-attention steps in place, and
        ``pool`` then lends the memory that each reorder copies them into.
        """
        room = self.decoder_steps if preallocate else 0
        return {
            "memory_kv": self.memory_cache(memory, self.decoder),
            "mask": mask,
            "self_kv": [StepCache(room, pool if preallocate else None) for _ in self.decoder],
            # s2gr: the state the next thinking vector starts from (model.outputs)
            "h": memory.new_zeros(memory.shape[0], self.spec.d_model),
            "step": 0,
        }

    def teacher_forced(
        self, memory: torch.Tensor, mask: torch.Tensor, target: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """Code logits for every SID position given the true codes target (B, P), and the thinking
        vectors (B, L, D) in s2gr mode (None for tiger)."""
        if self.spec.mode == "tiger":  # one causal pass over BOS, s1 … s_{P-1}
            inputs = [self.bos.expand(target.shape[0], -1)]
            inputs += [self.code_embedding(p, target[:, p]) for p in range(self.spec.positions - 1)]
            x = self.drop(torch.stack(inputs, 1) + self.dec_pos.weight[None, : len(inputs)])
            kv = self.memory_cache(memory, self.decoder)
            for i, layer in enumerate(self.decoder):
                x = layer(x, kv[i], mask)
            h = self.dec_norm(x)
            return [self.logits(p, h[:, p]) for p in range(self.spec.positions)], None
        # s2gr: a thinking vector is the decoder's own previous output, so the pass is split where
        # one is needed; the steps between two thinking vectors run together on the cache.
        cache = self.new_cache(memory, mask)
        batch = target.shape[0]
        bos = self.bos.expand(batch, 1, -1)
        codes = [self.code_embedding(p, target[:, p]) for p in range(self.spec.levels)]
        thoughts: list[torch.Tensor] = []
        out, fed = self.chain_steps(bos, 0, cache)
        if self.spec.reasoning_first:  # BOS, t1 … t_L chained; then s1 … s_L in one pass
            for level in range(self.spec.levels):
                thoughts.append(self.thought(fed[:, -1], level))
                out, fed = self.chain_steps(thoughts[-1][:, None], 1 + level, cache)
            coded, _ = self.chain_steps(torch.stack(codes, 1), 1 + self.spec.levels, cache)
            predictors = [out[:, 0], *coded.unbind(1)]
        else:  # BOS; then (t_l, s_l) pairs: output at t_l predicts s_l, output at s_l seeds t_{l+1}
            predictors = []
            for level in range(self.spec.levels):
                thoughts.append(self.thought(fed[:, -1], level))
                out, fed = self.chain_steps(torch.stack([thoughts[-1], codes[level]], 1), 1 + 2 * level, cache)
                predictors.append(out[:, 0])
            predictors.append(out[:, 1])  # the output at s_L predicts the de-dup code
        logits = [self.logits(p, hp) for p, hp in enumerate(predictors)]
        return logits, torch.stack(thoughts, 1)

    def global_interest(self, memory: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """v_g (B, D): the half-depth auxiliary decoder's reading of the history (s2gr)."""
        x = self.interest_query.expand(memory.shape[0], 1, -1)
        kv = self.memory_cache(memory, self.interest)
        for i, layer in enumerate(self.interest):
            x = layer(x, kv[i], mask)
        return self.interest_norm(x[:, 0])
