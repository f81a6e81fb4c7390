"""Training losses of TIGER and S2GR (METHOD.md §4).

L = L_Rec + w_align · Σ_l a_l · L_Align(l) + w_interest · L_InfoNCE + λ · L_Reg, with every weight a
params switch (0 = off) so the ablations (no alignment, no L_Reg) are one override away, and the
first release's choices (mean L_Rec, one τ, projected alignment, all-position interest target)
selectable beside the alternatives the issue "S2GR earns its name" measures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch.nn import functional as F

from s2gr_core.models.gr.model import SeqToSID

GlobalBatch = tuple[torch.Tensor, torch.Tensor]  # (targets of a whole batch (N, P), one rank's rows in it (B,))


@dataclass(frozen=True, slots=True)
class LossWeights:
    tau: float  # temperature of the global-interest InfoNCE (and of L_Align unless align_tau is set)
    align: float  # weight of Σ_l a_l · L_Align(l)
    interest: float  # weight of L_InfoNCE (global interest)
    reg: float  # λ of L_Reg
    rec_reduction: Literal["mean", "sum"] = "mean"  # of the per-position cross-entropies
    align_tau: float = 0.0  # 0 = tau
    align_levels: tuple[float, ...] = ()  # a_l per level (empty = 1 each)
    align_space: Literal["projection", "input_codes", "output_codes"] = "projection"
    interest_target: Literal["all", "levels"] = "all"
    interest_detach: bool = False

    def level_weights(self, levels: int) -> tuple[float, ...]:
        if not self.align_levels:
            return (1.0,) * levels
        if len(self.align_levels) != levels:
            raise ValueError(f"align_level_weights: {len(self.align_levels)} weights for {levels} SID levels")
        return self.align_levels


def position_ce(logits: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each SID position, batch mean: list of (B, V_p), target (B, P) -> (P,)."""
    return torch.stack([F.cross_entropy(lg, target[:, p]) for p, lg in enumerate(logits)])


def rec_loss(logits: list[torch.Tensor], target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """L_Rec: the per-position cross-entropies averaged ('mean') or summed ('sum', the SID's NLL)."""
    ce = position_ce(logits, target)
    return ce.sum() if reduction == "sum" else ce.mean()


def cluster_centroids(
    model: SeqToSID, centroids: torch.Tensor, cluster_of_code: torch.Tensor, space: str
) -> list[torch.Tensor]:
    """The centroids t_l is compared with, per level: list of (K_c, C) or (K_c, D).

    'projection': the sids stage's centroids (compared after the learned projection). Otherwise the
    mean of each cluster's rows of the model's decoder code table ('input_codes') or output head
    ('output_codes'), under stop-gradient so alignment shapes t_l and not the table it points at.
    Example: level codes [a, b, c] in clusters [0, 1, 0] -> centroids [(a + c) / 2, b].
    """
    if space == "projection":
        return list(centroids.unbind(0))
    table = (model.dec_codes.weight if space == "input_codes" else model.head.weight).detach()
    out = []
    n_clusters = centroids.shape[1]
    for level in range(model.spec.levels):
        start, size = model.code_offsets[level], model.spec.vocab[level]
        member = F.one_hot(cluster_of_code[level, :size], n_clusters).to(table.dtype)  # (V_l, K_c)
        sums = member.T @ table[start : start + size]  # (K_c, D)
        out.append(sums / member.sum(0).clamp_min(1.0)[:, None])
    return out


def align_logits(
    model: SeqToSID, thoughts: torch.Tensor, level_centroids: list[torch.Tensor], project: bool
) -> torch.Tensor:
    """Cosine of every t_l (projected by ``model.align[l]`` when ``project``) to level l's centroids:
    thoughts (B, L, D) -> (B, L, K_c), before the 1/τ."""
    sims = []
    for level, cents in enumerate(level_centroids):
        t = model.align[level](thoughts[:, level]) if project else thoughts[:, level]
        sims.append(F.normalize(t, dim=-1) @ F.normalize(cents, dim=-1).T)
    return torch.stack(sims, 1)


def thought_sims(
    model: SeqToSID, thoughts: torch.Tensor, centroids: torch.Tensor, cluster_of_code: torch.Tensor, space: str
) -> torch.Tensor:
    """:func:`align_logits` of the thoughts (B, L, D) in alignment space ``space`` -> (B, L, K_c)."""
    level_centroids = cluster_centroids(model, centroids, cluster_of_code, space)
    return align_logits(model, thoughts, level_centroids, project=space == "projection")


def align_loss(sims: torch.Tensor, clusters: torch.Tensor, tau: float) -> torch.Tensor:
    """InfoNCE of each level: sims (B, L, K_c), true clusters (B, L) -> (L,) losses."""
    logits = sims / tau
    ce = F.cross_entropy(logits.flatten(0, 1), clusters.flatten(), reduction="none")
    return ce.view(clusters.shape).mean(0)


def interest_loss(
    model: SeqToSID,
    v_g: torch.Tensor,
    target: torch.Tensor,
    tau: float,
    levels_only: bool = False,
    detach: bool = False,
    batch: GlobalBatch | None = None,
) -> torch.Tensor:
    """In-batch InfoNCE between v_g (B, D) and the mean code embedding of each target item (over all
    positions, or the L levels only), optionally under stop-gradient.

    ``batch``: when these B rows are one rank's share of a global batch, (that batch's targets
    (N, P), the positions of these rows in it (B,)): every target of the global batch is then a
    negative, as on one process."""
    pool, rows = batch if batch is not None else (target, torch.arange(len(v_g), device=v_g.device))
    positions = model.spec.levels if levels_only else pool.shape[1]
    codes = torch.stack([model.code_embedding(p, pool[:, p]) for p in range(positions)], 1).mean(1)
    if detach:
        codes = codes.detach()
    sims = F.normalize(v_g, dim=-1) @ F.normalize(codes, dim=-1).T
    return F.cross_entropy(sims / tau, rows)


def reg_loss(first_thought: torch.Tensor, v_g: torch.Tensor) -> torch.Tensor:
    """L_Reg = 1 − cos(t1, stopgrad(v_g)), averaged over the batch."""
    return (1 - F.cosine_similarity(first_thought, v_g.detach(), dim=-1)).mean()


def true_clusters(cluster_of_code: torch.Tensor, target: torch.Tensor, levels: int) -> torch.Tensor:
    """The cluster of each target code: cluster_of_code (L, K), target (B, P) -> (B, L)."""
    return cluster_of_code[torch.arange(levels, device=target.device), target[:, :levels]]


def training_loss(
    model: SeqToSID,
    history: torch.Tensor,
    target: torch.Tensor,
    weights: LossWeights,
    centroids: torch.Tensor | None = None,
    cluster_of_code: torch.Tensor | None = None,
    users: torch.Tensor | None = None,
    batch: GlobalBatch | None = None,
) -> dict[str, torch.Tensor]:
    """The loss terms of one batch (each logged separately; s2gr's auxiliary terms only where their
    weight is not 0: "align", then "interest" and "reg" together) and their weighted sum under "loss".
    ``batch``: the global batch these rows are a rank's share of (:func:`interest_loss`)."""
    memory, mask = model.encode(history, users)
    logits, thoughts = model.teacher_forced(memory, mask, target)
    terms = {"rec": rec_loss(logits, target, weights.rec_reduction)}
    total = terms["rec"]
    if thoughts is None:
        terms["loss"] = total
        return terms
    assert centroids is not None and cluster_of_code is not None, "s2gr needs the sids stage's clusters"
    # A term whose weight is 0 is not computed: it adds nothing to the gradient, and the interest
    # decoder's forward and backward pass cost about 5% of a paper-size S2GR step on the CPU.
    if weights.align:
        levels = model.spec.levels
        clusters = true_clusters(cluster_of_code, target, levels)
        sims = thought_sims(model, thoughts, centroids, cluster_of_code, weights.align_space)
        per_level = align_loss(sims, clusters, weights.align_tau or weights.tau)
        level_w = torch.tensor(weights.level_weights(levels), device=per_level.device, dtype=per_level.dtype)
        terms["align"] = (per_level * level_w).sum()
        total = total + weights.align * terms["align"]
    if weights.interest or weights.reg:
        v_g = model.global_interest(memory, mask)
        terms["interest"] = interest_loss(
            model, v_g, target, weights.tau, weights.interest_target == "levels", weights.interest_detach, batch
        )
        terms["reg"] = reg_loss(thoughts[:, 0], v_g)
        total = total + weights.interest * terms["interest"] + weights.reg * terms["reg"]
    terms["loss"] = total
    return terms


class Objective(torch.nn.Module):
    """:func:`training_loss` as a module's forward: what DDP wraps, so that every parameter the
    loss touches is seen by its gradient hooks. The centroids and clusters are constant buffers."""

    def __init__(self, model: SeqToSID, weights: LossWeights, centroids: torch.Tensor, cluster_of_code: torch.Tensor):
        super().__init__()
        self.model, self.weights = model, weights
        self.register_buffer("centroids", centroids, persistent=False)
        self.register_buffer("cluster_of_code", cluster_of_code, persistent=False)

    def forward(
        self,
        history: torch.Tensor,
        target: torch.Tensor,
        users: torch.Tensor | None = None,
        batch: GlobalBatch | None = None,
    ) -> dict[str, torch.Tensor]:
        return training_loss(
            self.model, history, target, self.weights, self.centroids, self.cluster_of_code, users, batch
        )
