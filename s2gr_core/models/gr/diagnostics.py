"""Validation signals beside the ranking metrics, logged every epoch for TIGER and S2GR.

The beam ranks items by their SID log-likelihood, so the teacher-forced negative log-likelihood
of the true SID on the validation users is the quantity to tune losses by: far less noisy than
NDCG@10 on a few thousand users, and split per position it shows where a change helps or hurts.
For S2GR the same pass measures the reasoning itself: L_Align per level, and the cluster
accuracy of each thinking vector, how often t_l's nearest centroid (by the alignment score) is
the cluster of the true code at level l: "interpretable reasoning" as a number. Its floor is not
1/K_c but ``cluster_majority_l*``, the share of the most frequent true cluster: a thought that
points every user at the same cluster scores exactly that, and says nothing about the user.

Keys (P = L + 1 positions): ``sid_nll``, ``ce_s1`` … ``ce_sL``, ``ce_dedup``; s2gr adds
``align_l1`` …, ``cluster_acc_l1`` … and ``cluster_majority_l1`` …. Each is a mean over users.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from s2gr_core.models.gr.data import eval_batches, sid_table
from s2gr_core.models.gr.losses import LossWeights, align_loss, thought_sims, true_clusters
from s2gr_core.models.gr.model import SeqToSID


def position_names(positions: int) -> list[str]:
    """['s1', …, 'sL', 'dedup'] for P = L + 1 positions."""
    return [f"s{p + 1}" for p in range(positions - 1)] + ["dedup"]


def cluster_accuracy(sims: torch.Tensor, clusters: torch.Tensor) -> torch.Tensor:
    """Share of rows whose best-scoring cluster is the true one, per level: sims (B, L, K_c),
    clusters (B, L) -> (L,).

    >>> sims = torch.tensor([[[0.9, 0.1], [0.2, 0.8]], [[0.3, 0.7], [0.6, 0.4]]])
    >>> cluster_accuracy(sims, torch.tensor([[0, 1], [0, 1]])).tolist()
    [0.5, 0.5]
    """
    return (sims.argmax(-1) == clusters).float().mean(0)


def chunk_sums(
    model: SeqToSID,
    hist: torch.Tensor,
    target: torch.Tensor,
    users: torch.Tensor | None,
    weights: LossWeights,
    centroids: torch.Tensor | None,
    cluster_of_code: torch.Tensor | None,
) -> dict[str, torch.Tensor]:
    """Teacher-forced sums over one chunk's users: history (b, H', P), target SIDs (b, P) ->
    "ce" (P,), and for s2gr "align" (L,) and "hits" (L,)."""
    memory, mask = model.encode(hist, users)
    logits, thoughts = model.teacher_forced(memory, mask, target)
    ce = torch.stack([F.cross_entropy(lg.float(), target[:, p], reduction="sum") for p, lg in enumerate(logits)])
    if thoughts is None or centroids is None or cluster_of_code is None:
        return {"ce": ce}
    clusters = true_clusters(cluster_of_code, target, model.spec.levels)
    sims = thought_sims(model, thoughts.float(), centroids, cluster_of_code, weights.align_space).float()
    per_level = align_loss(sims, clusters, weights.align_tau or weights.tau)  # (L,) batch means
    return {"ce": ce, "align": per_level * len(target), "hits": cluster_accuracy(sims, clusters) * len(target)}


@torch.no_grad()
def validation_signals(
    model: SeqToSID,
    histories: list[np.ndarray],
    users: np.ndarray,
    targets: np.ndarray,
    sids: np.ndarray,
    weights: LossWeights,
    centroids: torch.Tensor | None,
    cluster_of_code: torch.Tensor | None,
    batch_size: int,
    multiple: int = 1,
    length_buckets: bool = True,
) -> dict[str, float]:
    """Mean teacher-forced signals over the users (see the module doc); the model is left as it was."""
    device = next(model.parameters()).device
    table = sid_table(sids, device)
    target_sids = torch.as_tensor(sids[targets], device=device)
    if centroids is not None and cluster_of_code is not None:
        centroids, cluster_of_code = centroids.to(device), cluster_of_code.to(device)
    was = model.training
    model.eval()
    totals: dict[str, torch.Tensor] = {}
    try:
        chunks = eval_batches(
            histories, users, table, model.spec.max_history, batch_size, device, multiple, length_buckets,
            with_users=model.user is not None,
        )  # fmt: skip
        for rows, hist, user in chunks:
            part = chunk_sums(model, hist, target_sids[rows], user, weights, centroids, cluster_of_code)
            totals = {k: totals[k] + v if k in totals else v for k, v in part.items()}
    finally:
        model.train(was)
    if not totals:
        return {}
    n = len(targets)
    ce = (totals["ce"] / n).tolist()
    out = {"sid_nll": float(sum(ce))}
    out.update({f"ce_{name}": v for name, v in zip(position_names(len(ce)), ce, strict=True)})
    if "align" in totals:
        align, hits = (totals["align"] / n).tolist(), (totals["hits"] / n).tolist()
        assert cluster_of_code is not None
        truth = true_clusters(cluster_of_code, target_sids, model.spec.levels)  # (U, L)
        for level, (loss, hit) in enumerate(zip(align, hits, strict=True)):
            out[f"align_l{level + 1}"] = loss
            out[f"cluster_acc_l{level + 1}"] = hit
            out[f"cluster_majority_l{level + 1}"] = float(torch.bincount(truth[:, level]).max()) / n
    return out
