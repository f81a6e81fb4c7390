"""Parameters of the generative recommenders: TIGER and S2GR (METHOD.md §4)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from s2gr_core.config.base import SpeedConfig, _help, require


@dataclass(frozen=True, slots=True)
class GRConfig(SpeedConfig):
    d_model: int = _help("Model width D.")
    heads: int = _help("Attention heads.")
    head_dim: int = _help("Size of each head (heads × head_dim need not equal d_model, as in T5).")
    ffn: int = _help("Feed-forward width.")
    encoder_layers: int = _help("Encoder blocks.")
    decoder_layers: int = _help("Decoder blocks (the S2GR global-interest decoder has half as many).")
    dropout: float = _help("Dropout everywhere.")
    merge_codes: bool = _help(
        "One encoder token per history item (sum of its code embeddings) instead of one per code."
    )
    user_buckets: int = _help("Hashed user token: number of buckets (0 = no user token).")
    lr: float = _help("Peak AdamW learning rate.")
    warmup_steps: int = _help("Linear warm-up steps; then cosine decay to 0 over max_epochs.")
    weight_decay: float = _help("AdamW weight decay.")
    batch_size: int = _help("Training examples per batch.")
    max_epochs: int = _help("Upper bound on epochs (also the length of the cosine schedule).")
    patience: int = _help("Stop after this many epochs without a better validation NDCG@10.")
    beam: int = _help("Beam width of the constrained beam search (>= inference.top_k).")
    seed: int = _help("Seed of initialisation, shuffling and dropout.")
    device: Literal["auto", "cpu", "cuda"] = _help("'auto' takes a GPU when one is visible.")
    threads: int = _help("CPU threads for torch (0 = all cores).")

    def __post_init__(self) -> None:
        for name in ("d_model", "heads", "head_dim", "ffn", "encoder_layers", "decoder_layers", "batch_size"):
            require(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        for name in ("max_epochs", "patience", "beam"):
            require(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        require(0.0 <= self.dropout < 1.0, "dropout", f"must be in [0, 1), got {self.dropout}")
        require(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        require(self.warmup_steps >= 0, "warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        require(self.user_buckets >= 0, "user_buckets", f"must be >= 0, got {self.user_buckets}")
        require(self.threads >= 0, "threads", f"must be >= 0, got {self.threads}")


@dataclass(frozen=True, slots=True)
class S2GRConfig(GRConfig):
    reasoning_first: bool = _help("Ablation: all thinking vectors before the first code (the paper's weaker variant).")
    tau: float = _help("Temperature of the alignment and global-interest InfoNCE losses.")
    align_weight: float = _help("Weight of Σ_l L_Align(l) (0 = the 'no alignment' ablation).")
    interest_weight: float = _help("Weight of the global-interest InfoNCE loss.")
    reg_weight: float = _help("λ of L_Reg = 1 − cos(t1, stopgrad(v_g)) (0 = the 'no L_Reg' ablation).")

    def __post_init__(self) -> None:
        GRConfig.__post_init__(self)
        require(self.tau > 0, "tau", f"must be > 0, got {self.tau}")
        for name in ("align_weight", "interest_weight", "reg_weight"):
            require(getattr(self, name) >= 0, name, f"must be >= 0, got {getattr(self, name)}")
