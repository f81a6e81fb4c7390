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
    warmup_steps: int = _help("Linear warm-up steps; then cosine decay to 0 over schedule_epochs.")
    weight_decay: float = _help("AdamW weight decay.")
    decay_groups: Literal["all", "weights"] = _help(
        "Which parameters weight decay applies to: 'all', or 'weights' (matrices only: no decay on norms, "
        "biases, embeddings, BOS, the interest query and the level embeddings p_l)."
    )
    schedule_epochs: int = _help(
        "Length of the cosine schedule in epochs (0 = max_epochs). Set it near the epochs a run actually "
        "trains (early stopping) so the learning rate anneals within the budget."
    )
    clip_norm: float = _help("Gradient-norm clipping threshold (0 = no clipping).")
    clip_scope: Literal["global", "per_module"] = _help(
        "'global': one norm over every parameter; 'per_module': the trunk (encoder, decoder, embeddings, head) "
        "and each auxiliary head (alignment projections, interest decoder) are clipped separately, so a "
        "large auxiliary gradient cannot scale the trunk's step down."
    )
    rec_reduction: Literal["mean", "sum"] = _help(
        "L_Rec over the SID positions: 'mean' (the per-position average) or 'sum' (the SID's negative "
        "log-likelihood, the quantity the beam ranks by; P times the mean's weight against the auxiliary losses)."
    )
    batch_size: int = _help("Training examples per batch.")
    max_epochs: int = _help("Upper bound on epochs.")
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
        require(self.schedule_epochs >= 0, "schedule_epochs", f"must be >= 0, got {self.schedule_epochs}")
        require(self.clip_norm >= 0, "clip_norm", f"must be >= 0, got {self.clip_norm}")


@dataclass(frozen=True, slots=True)
class S2GRConfig(GRConfig):
    reasoning_first: bool = _help("Ablation: all thinking vectors before the first code (the paper's weaker variant).")
    tau: float = _help("Temperature of the alignment and global-interest InfoNCE losses.")
    align_weight: float = _help("Weight of Σ_l L_Align(l) (0 = the 'no alignment' ablation).")
    interest_weight: float = _help("Weight of the global-interest InfoNCE loss.")
    reg_weight: float = _help("λ of L_Reg = 1 − cos(t1, stopgrad(v_g)) (0 = the 'no L_Reg' ablation).")
    align_tau: float = _help("Temperature of L_Align alone (0 = tau).")
    align_level_weights: tuple[float, ...] = _help(
        "Relative weight of L_Align at each level, one per SID level (empty = 1 for every level)."
    )
    align_space: Literal["projection", "input_codes", "output_codes"] = _help(
        "Where t_l meets the clusters: 'projection' (a learned linear map to the codebook space, cosine to the "
        "sids stage's centroids), or in the model's own space, no projection: cosine to each cluster's mean "
        "(stop-gradient) of the decoder's code embeddings ('input_codes') or of the output head's code rows "
        "('output_codes')."
    )
    interest_target: Literal["all", "levels"] = _help(
        "L_InfoNCE's target: the mean code embedding over all SID positions ('all', de-dup code included) "
        "or over the L semantic levels only ('levels')."
    )
    interest_detach: bool = _help("Stop-gradient on L_InfoNCE's target (no gradient into the code table).")
    level_pos_init: float = _help(
        "Std of the initial level embeddings p_l (0.02 in the first release; ~1 matches the unit-scale decoder "
        "outputs they are added to)."
    )
    thought_position: bool = _help(
        "Add the decoder's step position embedding to thinking inputs too (false: p_l is their only position signal)."
    )
    thought_dropout: bool = _help("Dropout on the thinking inputs (false: only code inputs are dropped out).")
    thought_detach: bool = _help(
        "Feed back the previous output with stop-gradient (t_l = sg(h) + p_l): no back-propagation through "
        "the chain of dependent decoder passes."
    )
    thought_source: Literal["output", "residual"] = _help(
        "The state a thinking vector starts from: the decoder's 'output' (after its final LayerNorm, the vector "
        "the head scores) or its 'residual' stream before that norm."
    )
    thought_norm: bool = _help(
        "Give the thinking input a LayerNorm of its own: t_l = LN_t(h) + p_l (false: t_l = h + p_l)."
    )

    def __post_init__(self) -> None:
        GRConfig.__post_init__(self)
        require(self.tau > 0, "tau", f"must be > 0, got {self.tau}")
        require(self.align_tau >= 0, "align_tau", f"must be >= 0, got {self.align_tau}")
        for name in ("align_weight", "interest_weight", "reg_weight"):
            require(getattr(self, name) >= 0, name, f"must be >= 0, got {getattr(self, name)}")
        require(
            all(w >= 0 for w in self.align_level_weights),
            "align_level_weights",
            f"must all be >= 0, got {list(self.align_level_weights)}",
        )
        require(self.level_pos_init >= 0, "level_pos_init", f"must be >= 0, got {self.level_pos_init}")
