"""What an S2GR model "thought" for one user: the nearest code cluster of each thinking vector.

For the user's best item the thinking vectors are those of its beam (a thought depends only
on the prefix before it), so re-running the decoder on that SID with teacher forcing
recovers them exactly. Each t_l is scored against level l's K_c cluster centroids exactly as
L_Align scored it in training (``align_space``: through the learned projection, or in the
model's own code-embedding space); a cluster is shown by the titles of items whose level-l
code falls in it, most popular in training first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from s2gr_core.models.gr.data import left_padded, sid_tensor
from s2gr_core.models.gr.decoding import recommend
from s2gr_core.models.gr.losses import thought_sims
from s2gr_core.models.gr.model import SeqToSID
from s2gr_core.models.gr.train import Semantic


@dataclass(slots=True)
class Thought:
    level: int  # 1-based
    cluster: int
    similarity: float
    examples: list[int]  # item ids of the cluster, most popular first


@dataclass(slots=True)
class Explanation:
    history: list[int]
    thoughts: list[Thought]
    top: list[int]


@torch.no_grad()
def explain(
    model: SeqToSID,
    sem: Semantic,
    history: np.ndarray,
    popularity: np.ndarray,
    beam: int,
    top_k: int = 10,
    examples: int = 3,
    space: str = "projection",
) -> Explanation:
    """history: the user's item ids (oldest first); popularity (N,): training counts per item;
    space: the model's ``align_space`` (its training config)."""
    if model.spec.mode != "s2gr":
        raise ValueError("explain needs an S2GR model (a TIGER model has no thinking vectors)")
    model.eval()
    hist = sid_tensor(left_padded([history], model.spec.max_history), sem.sids)
    items, _ = recommend(model, hist, sem.tables, beam)
    best = int(items[0, 0])
    memory, mask = model.encode(hist)
    _, thoughts = model.teacher_forced(memory, mask, torch.as_tensor(sem.sids[[best]]))
    all_sims = thought_sims(model, thoughts, sem.centroids, sem.cluster_of_code, space)[0]  # (L, K_c)
    out = []
    for level, sims in enumerate(all_sims):
        cluster = int(sims.argmax())
        member_codes = (sem.cluster_of_code[level] == cluster).numpy()
        members = np.flatnonzero(member_codes[sem.sids[:, level]])
        ranked = members[np.argsort(-popularity[members], kind="stable")][:examples]
        out.append(Thought(level + 1, cluster, float(sims[cluster]), ranked.tolist()))
    return Explanation([int(i) for i in history[-model.spec.max_history :]], out, items[0, :top_k].tolist())
