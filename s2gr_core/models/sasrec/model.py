"""SASRec: causal self-attention over the item history, scores tied to the item embeddings."""

from __future__ import annotations

import math

import torch
from torch import nn

from s2gr_core.config import SASRecConfig


class SASRec(nn.Module):
    """Next-item model. Token 0 is padding; item ``i`` is token ``i + 1``.

    Shapes: ``tokens`` (B, L) right-padded -> ``hidden`` (B, L, D) -> ``scores`` (..., N items).

    Example::

        model = SASRec(n_items=1682, max_len=20, cfg=cfg)
        h = model(torch.tensor([[5, 9, 0]]))        # (1, 3, D); position 1 sees items 4 and 8
        model.scores(h[:, 1])                       # (1, 1682) scores for the item after item 8
    """

    def __init__(self, n_items: int, max_len: int, cfg: SASRecConfig):
        super().__init__()
        self.n_items, self.max_len, self.hidden = n_items, max_len, cfg.hidden
        self.from_end = cfg.positions == "from_end"
        self.item_emb = nn.Embedding(n_items + 1, cfg.hidden, padding_idx=0)
        self.pos_emb = nn.Embedding(max_len, cfg.hidden)
        self.drop = nn.Dropout(cfg.dropout)
        layer = nn.TransformerEncoderLayer(
            cfg.hidden,
            cfg.heads,
            dim_feedforward=cfg.hidden * cfg.ffn_mult,
            dropout=cfg.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, cfg.blocks, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.hidden)
        self.register_buffer("causal", torch.triu(torch.ones(max_len, max_len, dtype=torch.bool), 1), persistent=False)
        nn.init.normal_(self.item_emb.weight, std=0.02)
        nn.init.normal_(self.pos_emb.weight, std=0.02)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        length = tokens.shape[1]
        positions = torch.arange(length, device=tokens.device).expand(tokens.shape[0], length)
        if self.from_end:
            # the last real item gets position max_len - 1 whatever the sequence length (padding clamps)
            shift = self.max_len - (tokens != 0).sum(dim=1, keepdim=True)
            positions = (positions + shift).clamp(max=self.max_len - 1)
        x = self.item_emb(tokens) * math.sqrt(self.hidden) + self.pos_emb(positions)
        # Right padding + causal mask: a real position never attends to padding.
        h = self.encoder(self.drop(x), mask=self.causal[:length, :length], is_causal=True)
        return self.norm(h)

    def scores(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden @ self.item_emb.weight[1:].T

    def last_hidden(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Hidden state at each row's last real position: (B, D)."""
        h = self(tokens)
        return h[torch.arange(h.shape[0], device=h.device), lengths - 1]
