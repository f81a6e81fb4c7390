"""Sequence-to-SID model: TIGER (codes only) and S2GR (a thinking vector before each code).

Encoder input: the SIDs of the last ``max_history`` items, one token per code (token id =
1 + offset[position] + code, 0 = padding), or one token per item (the sum of its code
embeddings) with ``merge_codes``; optionally a hashed user token first.

Decoder, mode ``tiger``: inputs BOS, s1 … s_{P-1}; output p predicts s_{p+1}.
Mode ``s2gr``: inputs BOS, t1, s1, t2, s2, …, t_L, s_L where t_l = (decoder output at the
previous step) + p_l, a continuous vector, not a token; the output at t_l predicts s_l, the
output at s_L predicts the de-duplication code. ``reasoning_first`` instead feeds
BOS, t1 … t_L, s1 … s_L (the paper's weaker variant).

Shapes: B batch, H history items, P = L + 1 SID positions, D d_model, C codebook latent size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from s2gr_core.models.gr.layers import DecoderLayer, Dims, EncoderLayer


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
        offsets = torch.tensor([0, *spec.vocab[:-1]]).cumsum(0)
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
        self.drop = nn.Dropout(spec.dropout)
        if spec.mode == "s2gr":
            self.level_pos = nn.Parameter(torch.randn(spec.levels, d) * 0.02)  # p_l
            self.align = nn.ModuleList(nn.Linear(d, spec.cluster_dim) for _ in range(spec.levels))
            self.interest = nn.ModuleList(DecoderLayer(spec.dims) for _ in range(max(1, spec.decoder_layers // 2)))
            self.interest_query = nn.Parameter(torch.randn(d) * 0.02)
            self.interest_norm = nn.LayerNorm(d)

    # ---- encoder -------------------------------------------------------------------------
    def encode(self, history: torch.Tensor, users: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """history (B, H, P) SIDs, -1 = padding -> memory (B, S, D), mask (B, 1, 1, S) True = real token."""
        pad = history[..., 0] < 0  # (B, H)
        ids = torch.where(history < 0, torch.zeros_like(history), history + self.offsets + 1)
        emb = self.enc_codes(ids)  # (B, H, P, D)
        if self.spec.merge_codes:
            x, real = emb.sum(dim=2), ~pad
        else:
            x, real = emb.flatten(1, 2), (~pad).repeat_interleave(self.spec.positions, dim=1)
        if self.user is not None:
            assert users is not None, "the model has a user token: pass users"
            x = torch.cat([self.user(users % self.spec.user_buckets)[:, None], x], dim=1)
            real = torch.cat([torch.ones_like(real[:, :1]), real], dim=1)
        x = self.drop(x + self.enc_pos.weight[None, : x.shape[1]])
        mask = real[:, None, None, :]
        for layer in self.encoder:
            x = layer(x, mask)
        return self.enc_norm(x), mask

    def memory_cache(self, memory: torch.Tensor, layers: nn.ModuleList) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [layer.cross_attn.project_kv(memory) for layer in layers]

    # ---- decoder -------------------------------------------------------------------------
    def code_embedding(self, position: int, codes: torch.Tensor) -> torch.Tensor:
        return self.dec_codes(codes + self.offsets[position])

    def logits(self, position: int, h: torch.Tensor) -> torch.Tensor:
        """Scores of the codes of SID position ``position`` from decoder outputs h (..., D)."""
        start = int(self.offsets[position])
        weight = self.head.weight[start : start + self.spec.vocab[position]]
        return h @ weight.T

    def decode_step(self, x: torch.Tensor, step: int, cache: dict[str, Any]) -> torch.Tensor:
        """One decoder step: x (B, D) input -> output (B, D); appends to the self-attention cache."""
        h = self.drop(x + self.dec_pos.weight[step])[:, None]
        new = []
        for i, layer in enumerate(self.decoder):
            h, kv = layer(h, cache["memory_kv"][i], cache["mask"], past=cache["self_kv"][i])
            new.append(kv)
        cache["self_kv"] = new
        return self.dec_norm(h[:, 0])

    def new_cache(self, memory: torch.Tensor, mask: torch.Tensor, beams: int = 1) -> dict[str, Any]:
        """Decoding state for ``beams`` copies of every row of memory (B, S, D): rows i*beams … are user i.

        The cross-attention keys/values are projected once per user, then repeated per beam.
        """
        b, d = memory.shape[0] * beams, self.spec.d_model
        empty = memory.new_zeros(b, self.spec.heads, 0, self.spec.head_dim)
        kv = [
            (k.repeat_interleave(beams, 0), v.repeat_interleave(beams, 0))
            for k, v in self.memory_cache(memory, self.decoder)
        ]
        return {
            "memory_kv": kv,
            "mask": mask.repeat_interleave(beams, 0),
            "self_kv": [(empty, empty) for _ in self.decoder],
            "h": memory.new_zeros(b, d),  # the last decoder output (s2gr: the next thinking vector's base)
            "step": 0,
        }

    def schedule(self) -> list[tuple[str, int]]:
        """Decoder inputs in order: ('bos', 0), ('think', l), ('code', p)."""
        levels = self.spec.levels
        if self.spec.mode == "tiger":
            return [("bos", 0)] + [("code", p) for p in range(self.spec.positions - 1)]
        if self.spec.reasoning_first:
            return [("bos", 0)] + [("think", lv) for lv in range(levels)] + [("code", p) for p in range(levels)]
        steps: list[tuple[str, int]] = [("bos", 0)]
        for lv in range(levels):
            steps += [("think", lv), ("code", lv)]
        return steps

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
                x, _ = layer(x, kv[i], mask)
            h = self.dec_norm(x)
            return [self.logits(p, h[:, p]) for p in range(self.spec.positions)], None
        # s2gr: thinking vectors depend on the decoder's own outputs, so step with the cache
        cache = self.new_cache(memory, mask)
        outputs, thoughts = [], []
        for step, (kind, index) in enumerate(self.schedule()):
            if kind == "bos":
                x = self.bos.expand(target.shape[0], -1)
            elif kind == "think":
                x = cache["h"] + self.level_pos[index]
                thoughts.append(x)
            else:
                x = self.code_embedding(index, target[:, index])
            cache["h"] = self.decode_step(x, step, cache)
            outputs.append((kind, index, cache["h"]))
        logits = self.code_logits_from(outputs)
        return logits, torch.stack(thoughts, 1)

    def code_logits_from(self, outputs: list[tuple[str, int, torch.Tensor]]) -> list[torch.Tensor]:
        """Which decoder outputs predict which code, for the s2gr schedules."""
        levels = self.spec.levels
        if self.spec.reasoning_first:
            # outputs at t_L, s1 … s_L predict s1 … s_{L+1}
            predictors = [outputs[levels][2]] + [outputs[levels + 1 + p][2] for p in range(levels)]
        else:
            # output at t_l predicts s_l; the output at s_L predicts the de-dup code
            predictors = [outputs[2 * lv + 1][2] for lv in range(levels)] + [outputs[-1][2]]
        return [self.logits(p, h) for p, h in enumerate(predictors)]

    def global_interest(self, memory: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """v_g (B, D): the half-depth auxiliary decoder's reading of the history (s2gr)."""
        x = self.interest_query.expand(memory.shape[0], 1, -1)
        kv = self.memory_cache(memory, self.interest)
        for i, layer in enumerate(self.interest):
            x, _ = layer(x, kv[i], mask)
        return self.interest_norm(x[:, 0])
