"""T5-style pre-norm transformer blocks with a key/value cache for step-by-step decoding.

Shapes: B batch (users × beams when decoding), T target steps, S source tokens, D d_model,
H heads of size E (the inner width H·E need not equal D, as in T5: 6 × 64 over d_model 128).
"""

from __future__ import annotations

import math
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


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device) -> torch.Tensor:
    """A bool mask of ``shape``, each element True with probability 1 - p, four per random word.

    Every 64-bit word from torch's generator (so ``torch.manual_seed`` still decides) is split
    into four 16-bit lanes, each compared with a threshold: p is rounded to a multiple of
    1/65536 (0.1 -> 0.100006). Example: p 0.25 -> lanes below -16384 are dropped.
    """
    n = math.prod(shape)
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_(-(2**63), None)
    return (words.view(torch.int16)[:n] >= round(p * 65536) - 32768).view(shape)


def masks_here(x: torch.Tensor, p: float) -> bool:
    """Whether dropout p on x draws its mask with :func:`keep_mask`: eager CPU code with 0 < p < 1.

    ATen's CPU ``bernoulli_`` is vectorised (MKL) only on Intel CPUs; elsewhere it calls mt19937
    once per element: on this project's AMD EPYC, the mask of a paper-size FFN activation
    (256 × 32 × 1024) took 35 ms against 5.5 ms with ``keep_mask`` and 1.2 ms for the multiply,
    and dropout was 15-18% of a training step's CPU time. GPUs and compiled graphs keep
    ``F.dropout``, whose generators are already parallel.
    """
    return 0.0 < p < 1.0 and x.device.type == "cpu" and not torch.compiler.is_compiling()


def dropped(x: torch.Tensor, p: float) -> torch.Tensor:
    """Inverted dropout of x with a :func:`keep_mask` mask: kept elements scaled by 1 / (1 - p)."""
    return torch.where(keep_mask(x.shape, p, x.device), x * (1.0 / (1.0 - p)), 0.0)


class Dropout(nn.Dropout):
    """``nn.Dropout`` whose mask comes from :func:`keep_mask` where :func:`masks_here` says so."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not masks_here(x, self.p):
            return super().forward(x)
        return dropped(x, self.p)


def matmul_attends(q: torch.Tensor, p: float) -> bool:
    """Whether attention runs as :func:`attention_dropped` (batched matmuls) instead of SDPA: where the
    dropout mask must come from :func:`keep_mask` (:func:`masks_here`), and for bf16 on a CPU, where SDPA's
    kernel ran 1.4-2.9x slower than the matmuls at decoding's shapes (one query per beam over its few
    cached steps; a user's beams over its memory tokens): docs/benchmarks.md."""
    cpu_bf16 = q.dtype == torch.bfloat16 and q.device.type == "cpu" and not torch.compiler.is_compiling()
    return masks_here(q, p) or cpu_bf16


def attention_dropped(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, causal: bool, p: float
) -> torch.Tensor:
    """``F.scaled_dot_product_attention`` with dropout p, written out so that the dropout mask of
    the attention weights comes from :func:`dropped`: q (B, H, T, E), k/v (B, H, S, E), mask
    broadcastable to (B, H, T, S), True = attend -> (B, H, T, E). The softmax runs in fp32 whatever
    the inputs' precision (as SDPA's does).

    With dropout, CPU SDPA runs this same math path anyway, and draws its mask with the serial
    ``bernoulli_`` (at 80 encoder tokens: 256 × 6 × 80 × 80 weights per layer and step).
    """
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    if causal:
        mask = torch.ones(scores.shape[-2:], dtype=torch.bool, device=q.device).tril()
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(-1, dtype=torch.float32).to(v.dtype)
    return (dropped(weights, p) if p > 0 else weights) @ v


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
        """Queries from x (G·B, T, D) over keys/values (B, H, S, E); mask (B, 1, T|1, S) True = attend.

        G > 1 when the G beams of a user query that user's memory: their queries are folded into
        one longer query sequence, so the memory's keys/values are never copied per beam.
        """
        q = rearrange(self.q(x), "b t (h e) -> b h t e", h=self.heads)
        group = q.shape[0] // k.shape[0]
        q = rearrange(q, "(b g) h t e -> b h (g t) e", g=group)
        p = self.dropout if self.training else 0.0
        if matmul_attends(q, p):
            out = attention_dropped(q, k, v, mask, causal, p)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=causal)
        return self.out(rearrange(out, "b h (g t) e -> (b g) t (h e)", g=group))


class FeedForward(nn.Sequential):
    def __init__(self, dims: Dims):
        super().__init__(
            nn.Linear(dims.d_model, dims.ffn),
            nn.GELU(),
            Dropout(dims.dropout),
            nn.Linear(dims.ffn, dims.d_model),
        )


class EncoderLayer(nn.Module):
    def __init__(self, dims: Dims):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dims.d_model), nn.LayerNorm(dims.d_model)
        self.attn, self.ffn = Attention(dims), FeedForward(dims)
        self.drop = Dropout(dims.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        k, v = self.attn.project_kv(h)
        x = x + self.drop(self.attn(h, k, v, mask))
        return x + self.drop(self.ffn(self.norm2(x)))


class BufferPool:
    """Tensors that no-grad decoding gives back and takes again, by shape, dtype and device.

    PyTorch's CPU allocator caches nothing, and glibc maps a block above its mmap threshold
    (32 MiB at most) afresh and page-faults it as it is written: at the paper size a beam-search
    cache copy (5,120 beams, 6 × 64 heads, S2GR's 7 steps: 52 MiB) took 45 ms into a fresh tensor
    and 4-8 ms into a reused one. CUDA's caching allocator already reuses; there this mirrors it.
    """

    def __init__(self) -> None:
        self.owned: dict[tuple, list[torch.Tensor]] = {}
        self.free: dict[tuple, list[torch.Tensor]] = {}

    @staticmethod
    def key(shape: tuple[int, ...], like: torch.Tensor) -> tuple:
        return (tuple(shape), like.dtype, like.device)

    def take(self, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """An uninitialised tensor of ``shape`` with ``like``'s dtype and device."""
        key = self.key(shape, like)
        if self.free.get(key):
            return self.free[key].pop()
        tensor = like.new_empty(shape)
        self.owned.setdefault(key, []).append(tensor)
        return tensor

    def give(self, *tensors: torch.Tensor) -> None:
        """Hand back tensors this pool lent (others are ignored); the caller no longer reads them."""
        for tensor in tensors:
            key = self.key(tuple(tensor.shape), tensor)
            if any(tensor is t for t in self.owned.get(key, ())):
                self.free.setdefault(key, []).append(tensor)

    def reclaim(self) -> None:
        """Every tensor is free again: the decoding call that used them is over."""
        self.free = {key: list(tensors) for key, tensors in self.owned.items()}


class StepCache:
    """One decoder layer's self-attention keys/values (N, H, T, E) for the steps decoded so far.

    ``room`` 0 grows by concatenation, which autograd can follow (S2GR's teacher forcing).
    ``room`` R > 0 preallocates R steps and writes each new step in place: for no-grad decoding,
    where a step then costs only its own keys/values instead of a copy of the whole cache.
    """

    def __init__(self, room: int = 0, pool: BufferPool | None = None):
        self.room, self.length, self.pool = room, 0, pool
        self.released = False
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    def spent(self) -> None:
        if self.released:
            raise RuntimeError("this cache was reordered and its memory reused: use the reordered cache")

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add the new steps' k, v (N, H, T, E); return the keys/values of every step so far."""
        self.spent()
        start, self.length = self.length, self.length + k.shape[2]
        if not self.room:
            self.k = k if self.k is None else torch.cat([self.k, k], dim=2)
            self.v = v if self.v is None else torch.cat([self.v, v], dim=2)
            return self.k, self.v
        if self.length > self.room:
            raise ValueError(f"decoder cache holds {self.room} steps; step {self.length} does not fit")
        if self.k is None:
            self.k = k.new_empty(k.shape[0], k.shape[1], self.room, k.shape[3])
            self.v = torch.empty_like(self.k)
        assert self.v is not None
        self.k[:, :, start : self.length], self.v[:, :, start : self.length] = k, v
        return self.k[:, :, : self.length], self.v[:, :, : self.length]

    def reorder(self, parent: torch.Tensor) -> StepCache:
        """A cache whose row i is row parent[i] of this one (beam search).

        With a pool, a preallocated cache is copied into pooled memory and gives its own back:
        it cannot be appended to or reordered afterwards (beam search only reads the reordered one).
        """
        self.spent()
        moved = StepCache(self.room, self.pool)
        moved.length = self.length
        if self.k is None or self.v is None:
            return moved
        if not self.room or self.k.requires_grad:  # out= cannot be differentiated
            # index_select copies whole rows: several times faster than advanced indexing on CPU
            moved.k, moved.v = self.k.index_select(0, parent), self.v.index_select(0, parent)
            return moved
        # only the filled steps move: the empty tail of a preallocated cache is written later
        shape = (parent.shape[0], *self.k.shape[1:])
        if self.pool is None:
            moved.k, moved.v = self.k.new_empty(shape), self.v.new_empty(shape)
        else:
            moved.k, moved.v = self.pool.take(shape, self.k), self.pool.take(shape, self.v)
        for old, new in ((self.k, moved.k), (self.v, moved.v)):
            torch.index_select(old[:, :, : self.length], 0, parent, out=new[:, :, : self.length])
        if self.pool is not None:
            self.pool.give(self.k, self.v)
            self.k = self.v = None
            self.released = True
        return moved


class DecoderLayer(nn.Module):
    def __init__(self, dims: Dims):
        super().__init__()
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(dims.d_model) for _ in range(3))
        self.self_attn, self.cross_attn, self.ffn = Attention(dims), Attention(dims), FeedForward(dims)
        self.drop = Dropout(dims.dropout)

    def forward(
        self,
        x: torch.Tensor,
        memory_kv: tuple[torch.Tensor, torch.Tensor],
        memory_mask: torch.Tensor,
        past: StepCache | None = None,
    ) -> torch.Tensor:
        """x (N, T, D) new target steps -> outputs (N, T, D).

        Without ``past`` the T steps attend causally to each other (TIGER's teacher forcing).
        With it they also see every step already in it, and are appended to it.
        """
        h = self.norm1(x)
        k, v = self.self_attn.project_kv(h)
        seen = 0 if past is None else past.length
        if past is not None:
            k, v = past.append(k, v)
        steps = x.shape[1]
        causal = None
        if seen and steps > 1:  # new step i sees the cache and new steps 0 … i
            causal = torch.ones(steps, seen + steps, dtype=torch.bool, device=x.device).tril(seen)
        attended = self.self_attn(h, k, v, mask=causal, causal=not seen and steps > 1)
        x = x + self.drop(attended)
        x = x + self.drop(self.cross_attn(self.norm2(x), *memory_kv, mask=memory_mask))
        return x + self.drop(self.ffn(self.norm3(x)))
