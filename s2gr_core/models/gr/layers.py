"""T5-style pre-norm transformer blocks with a key/value cache for step-by-step decoding.

Shapes: B batch (users × beams when decoding), T target steps, S source tokens, D d_model,
H heads of size E (the inner width H·E need not equal D, as in T5: 6 × 64 over d_model 128).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True, slots=True)
class Dims:
    d_model: int
    heads: int
    head_dim: int
    ffn: int
    dropout: float


class Attention(nn.Module):
    def __init__(self, dims: Dims):
        super().__init__()
        inner = dims.heads * dims.head_dim
        self.heads, self.dropout = dims.heads, dims.dropout
        self.q = nn.Linear(dims.d_model, inner, bias=False)
        self.kv = nn.Linear(dims.d_model, 2 * inner, bias=False)
        self.out = nn.Linear(inner, dims.d_model, bias=False)

    def project_kv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, S, D) -> keys, values (B, H, S, E)."""
        k, v = rearrange(self.kv(x), "b s (two h e) -> two b h s e", two=2, h=self.heads)
        return k, v

    def forward(
        self,
        x: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        mask: torch.Tensor | None = None,
        causal: bool = False,
    ) -> torch.Tensor:
        """Queries from x (B, T, D) over keys/values (B, H, S, E); mask (B, 1, T|1, S) True = attend."""
        q = rearrange(self.q(x), "b t (h e) -> b h t e", h=self.heads)
        drop = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop, is_causal=causal)
        return self.out(rearrange(out, "b h t e -> b t (h e)"))


class FeedForward(nn.Sequential):
    def __init__(self, dims: Dims):
        super().__init__(
            nn.Linear(dims.d_model, dims.ffn),
            nn.GELU(),
            nn.Dropout(dims.dropout),
            nn.Linear(dims.ffn, dims.d_model),
        )


class EncoderLayer(nn.Module):
    def __init__(self, dims: Dims):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dims.d_model), nn.LayerNorm(dims.d_model)
        self.attn, self.ffn = Attention(dims), FeedForward(dims)
        self.drop = nn.Dropout(dims.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        k, v = self.attn.project_kv(h)
        x = x + self.drop(self.attn(h, k, v, mask))
        return x + self.drop(self.ffn(self.norm2(x)))


class DecoderLayer(nn.Module):
    def __init__(self, dims: Dims):
        super().__init__()
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(dims.d_model) for _ in range(3))
        self.self_attn, self.cross_attn, self.ffn = Attention(dims), Attention(dims), FeedForward(dims)
        self.drop = nn.Dropout(dims.dropout)

    def forward(
        self,
        x: torch.Tensor,
        memory_kv: tuple[torch.Tensor, torch.Tensor],
        memory_mask: torch.Tensor,
        past: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """x (B, T, D) new target steps; ``past`` the cached self-attention keys/values of earlier steps.

        Returns the outputs and the updated self-attention cache. With ``past`` None and T > 1 the
        steps attend causally to each other (teacher forcing); with a cache, T is 1 (decoding).
        """
        h = self.norm1(x)
        k, v = self.self_attn.project_kv(h)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        x = x + self.drop(self.self_attn(h, k, v, causal=past is None and x.shape[1] > 1))
        x = x + self.drop(self.cross_attn(self.norm2(x), *memory_kv, mask=memory_mask))
        return x + self.drop(self.ffn(self.norm3(x))), (k, v)
