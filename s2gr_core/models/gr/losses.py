"""Training losses of TIGER and S2GR (METHOD.md §4).

L = L_Rec + Σ_l w_align · L_Align(l) + w_interest · L_InfoNCE + λ · L_Reg, with every weight a
params switch (0 = off) so the ablations (no alignment, no L_Reg) are one override away.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from s2gr_core.models.gr.model import SeqToSID


@dataclass(frozen=True, slots=True)
class LossWeights:
    tau: float  # temperature of every InfoNCE
    align: float  # weight of Σ_l L_Align(l)
    interest: float  # weight of L_InfoNCE (global interest)
    reg: float  # λ of L_Reg


def rec_loss(logits: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each SID position, averaged over positions: list of (B, V_p), target (B, P)."""
    return torch.stack([F.cross_entropy(lg, target[:, p]) for p, lg in enumerate(logits)]).mean()


def align_loss(
    model: SeqToSID, thoughts: torch.Tensor, centroids: torch.Tensor, clusters: torch.Tensor, tau: float
) -> torch.Tensor:
    """Σ_l InfoNCE(cos(proj_l(t_l), C_l)/τ, true cluster).

    thoughts (B, L, D), centroids (L, K_c, C), clusters (B, L) -> scalar.
    """
    total = thoughts.new_zeros(())
    for level, proj in enumerate(model.align):
        sims = F.normalize(proj(thoughts[:, level]), dim=-1) @ F.normalize(centroids[level], dim=-1).T
        total = total + F.cross_entropy(sims / tau, clusters[:, level])
    return total


def interest_loss(model: SeqToSID, v_g: torch.Tensor, target: torch.Tensor, tau: float) -> torch.Tensor:
    """In-batch InfoNCE between v_g (B, D) and the mean code embedding of each target item."""
    codes = torch.stack([model.code_embedding(p, target[:, p]) for p in range(target.shape[1])], 1).mean(1)
    sims = F.normalize(v_g, dim=-1) @ F.normalize(codes, dim=-1).T
    return F.cross_entropy(sims / tau, torch.arange(len(v_g), device=v_g.device))


def reg_loss(first_thought: torch.Tensor, v_g: torch.Tensor) -> torch.Tensor:
    """L_Reg = 1 − cos(t1, stopgrad(v_g)), averaged over the batch."""
    return (1 - F.cosine_similarity(first_thought, v_g.detach(), dim=-1)).mean()


def training_loss(
    model: SeqToSID,
    history: torch.Tensor,
    target: torch.Tensor,
    weights: LossWeights,
    centroids: torch.Tensor | None = None,
    cluster_of_code: torch.Tensor | None = None,
    users: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """All loss terms of one batch (each logged separately) and their weighted sum under "loss"."""
    memory, mask = model.encode(history, users)
    logits, thoughts = model.teacher_forced(memory, mask, target)
    terms = {"rec": rec_loss(logits, target)}
    total = terms["rec"]
    if thoughts is not None:
        assert centroids is not None and cluster_of_code is not None, "s2gr needs the sids stage's clusters"
        levels = model.spec.levels
        clusters = cluster_of_code[torch.arange(levels, device=target.device), target[:, :levels]]  # (B, L)
        terms["align"] = align_loss(model, thoughts, centroids, clusters, weights.tau)
        v_g = model.global_interest(memory, mask)
        terms["interest"] = interest_loss(model, v_g, target, weights.tau)
        terms["reg"] = reg_loss(thoughts[:, 0], v_g)
        total = (
            total + weights.align * terms["align"] + weights.interest * terms["interest"] + weights.reg * terms["reg"]
        )
    terms["loss"] = total
    return terms
