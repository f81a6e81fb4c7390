"""Building blocks of residual quantisation shared by the RQ-VAE and RQ-KMeans tokenizers:
faiss k-means, load-balanced code selection, the uniformity repulsion, usage statistics.

Shapes: L levels, K codes per level, d code dimension, B items in a batch.
"""

from __future__ import annotations

import numpy as np
import torch


def kmeans(
    points: np.ndarray, k: int, seed: int, niter: int = 25, spherical: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """faiss k-means: (N, d) -> centroids (k, d) float32 and the assignment (N,) int64.

    ``spherical``: k-means of the unit-normalised points with unit centroids, each point assigned
    to the centroid of highest cosine (the geometry of a cosine score).
    """
    import faiss  # only where codes are fitted: model training and decoding run without faiss installed

    points = np.ascontiguousarray(points, dtype=np.float32)
    if spherical:
        points = points / np.maximum(np.linalg.norm(points, axis=1, keepdims=True), 1e-12)
    if len(points) < k:
        raise ValueError(f"k-means needs at least k={k} points, got {len(points)}")
    km = faiss.Kmeans(
        points.shape[1],
        k,
        niter=niter,
        seed=seed,
        verbose=False,
        min_points_per_centroid=1,
        max_points_per_centroid=100_000,
        spherical=spherical,
    )
    km.train(points)
    _, assign = km.index.search(points, 1)
    return km.centroids.copy(), assign[:, 0].astype(np.int64)


def squared_distances(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """(B, d), (K, d) -> (B, K) squared Euclidean distances, clamped at 0 against rounding."""
    return (x.pow(2).sum(1, keepdim=True) - 2 * x @ codebook.T + codebook.pow(2).sum(1)[None]).clamp_min(0)


def balance_factors(usage: torch.Tensor, strength: float, max_factor: float) -> torch.Tensor:
    """Distance multipliers from code usage shares (K,) -> (K,), bounded to [1/max_factor, max_factor].

    A code used K times more often than uniform looks ``K**strength`` times farther; a rarely
    used code looks nearer. Example: usage [0.5, 0.25, 0.25, 0] with strength 1, max 2 ->
    relative usage [2, 1, 1, 0] -> factors [2, 1, 1, 0.5].
    """
    relative = usage * usage.numel()
    return relative.clamp_min(1e-12).pow(strength).clamp(1.0 / max_factor, max_factor)


def select_codes(residual: torch.Tensor, codebook: torch.Tensor, factors: torch.Tensor | None = None) -> torch.Tensor:
    """Nearest codeword per row (B,) after multiplying distances by the balance ``factors`` (K,)."""
    dist = squared_distances(residual, codebook)
    if factors is not None:
        dist = dist * factors[None]
    return dist.argmin(dim=1)


def uniformity_loss(codebook: torch.Tensor, threshold: float) -> torch.Tensor:
    """Repulsion between distinct codewords closer than ``threshold`` × the median pairwise distance.

    Scale-free (residual levels shrink), zero when no pair is that close:
    mean over pairs i < j of relu(1 − dist_ij / δ)², δ = threshold · median(dist).
    """
    k = codebook.shape[0]
    sq = codebook.pow(2).sum(1)
    # distances from one matmul: cheaper than cdist's backward, this runs every step
    d2 = (sq[:, None] + sq[None] - 2 * codebook @ codebook.T).clamp_min(1e-12)
    upper = torch.triu_indices(k, k, 1, device=codebook.device)
    dist = d2[upper[0], upper[1]].sqrt()
    delta = threshold * dist.detach().median().clamp_min(1e-8)
    return torch.relu(1.0 - dist / delta).pow(2).mean()


def usage_stats(codes: np.ndarray, size: int) -> dict[str, float]:
    """Utilisation (share of the K codes used) and usage perplexity (exp of the entropy) of one level."""
    counts = np.bincount(codes, minlength=size).astype(np.float64)
    p = counts / max(counts.sum(), 1.0)
    nz = p[p > 0]
    return {"utilisation": float((counts > 0).mean()), "perplexity": float(np.exp(-(nz * np.log(nz)).sum()))}


def collision_stats(codes: np.ndarray) -> dict[str, float]:
    """Items sharing a full SID with another item: rate (share of items) and largest group size."""
    if len(codes) == 0:
        return {"collision_rate": 0.0, "largest_collision_group": 0}
    _, inverse, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    group = counts[inverse.ravel()]
    return {"collision_rate": float((group > 1).mean()), "largest_collision_group": int(counts.max())}


def level_reconstruction(latent: np.ndarray, codebooks: np.ndarray, codes: np.ndarray) -> list[float]:
    """Relative residual energy after each level: E||z − Σ_{j<=l} c_j||² / E||z||², one value per level."""
    total = float((latent.astype(np.float64) ** 2).sum()) or 1.0
    residual = latent.astype(np.float64).copy()
    out = []
    for level in range(codebooks.shape[0]):
        residual -= codebooks[level][codes[:, level]]
        out.append(float((residual**2).sum()) / total)
    return out
