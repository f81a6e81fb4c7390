"""Fit a tokenizer (CoBa RQ-VAE or RQ-KMeans) on item embeddings, and the artifact both produce.

The artifact (``codebook.pt``) holds, for N items, L levels of K codes in a d-dim space:
``codebooks`` (L, K, d), ``codes`` (N, L) and ``latent`` (N, d), the vectors that were
quantised (RQ-VAE latents, or the standardised embeddings for RQ-KMeans).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from s2gr_core.config import CodebookConfig
from s2gr_core.io import load_torch, save_torch
from s2gr_core.models.common import resolve_device, seed_everything, set_threads
from s2gr_core.semantic.quantize import collision_stats, level_reconstruction, usage_stats
from s2gr_core.semantic.rqvae import RQVAE, Balance, TrainSettings, relative_error, train_rqvae


@dataclass(slots=True)
class Codebook:
    tokenizer: str
    codebooks: np.ndarray  # (L, K, d) float32
    codes: np.ndarray  # (N, L) int64
    latent: np.ndarray  # (N, d) float32
    recon_error: float  # share of input variance the reconstruction misses
    history: list[dict[str, float]] = field(default_factory=list)
    state: dict[str, Any] | None = None  # RQ-VAE weights and usage EMA (None for RQ-KMeans)
    seconds: float = 0.0

    @property
    def size(self) -> int:
        return self.codebooks.shape[1]

    def metrics(self) -> dict[str, float]:
        """Per level utilisation, perplexity and residual error; overall reconstruction and collisions."""
        out: dict[str, float] = {"recon_error": round(self.recon_error, 6)}
        residual = level_reconstruction(self.latent, self.codebooks, self.codes)
        for level in range(self.codebooks.shape[0]):
            stats = usage_stats(self.codes[:, level], self.size)
            out[f"l{level + 1}_utilisation"] = round(stats["utilisation"], 6)
            out[f"l{level + 1}_perplexity"] = round(stats["perplexity"], 3)
            out[f"l{level + 1}_residual_error"] = round(residual[level], 6)
        out.update(collision_stats(self.codes))
        out["min_utilisation"] = min(out[f"l{i + 1}_utilisation"] for i in range(self.codebooks.shape[0]))
        return out

    def save(self, path: Path, config: dict[str, Any]) -> None:
        payload = {
            "tokenizer": self.tokenizer,
            "codebooks": torch.from_numpy(self.codebooks),
            "codes": torch.from_numpy(self.codes),
            "latent": torch.from_numpy(self.latent),
            "recon_error": self.recon_error,
            "state": self.state,
            "config": config,
        }
        save_torch(payload, path)


def load_codebook(path: Path) -> Codebook:
    raw = load_torch(path)
    return Codebook(
        tokenizer=raw["tokenizer"],
        codebooks=raw["codebooks"].numpy(),
        codes=raw["codes"].numpy().astype(np.int64),
        latent=raw["latent"].numpy(),
        recon_error=float(raw["recon_error"]),
        state=raw["state"],
    )


def standardise(x: np.ndarray) -> np.ndarray:
    """Centre each dimension and divide by one global scale: unit average variance, geometry kept."""
    centred = x - x.mean(axis=0, keepdims=True)
    scale = float(np.sqrt((centred**2).mean())) or 1.0
    return (centred / scale).astype(np.float32)


def fit_rqkmeans(x: np.ndarray, levels: int, size: int, seed: int) -> Codebook:
    """faiss ``ResidualQuantizer`` (residual k-means with beam search; no gradient training)."""
    import faiss  # lazily, as in quantize.kmeans

    nbits = int(np.log2(size))
    rq = faiss.ResidualQuantizer(x.shape[1], levels, nbits)
    rq.cp.seed = seed
    if len(x) <= x.shape[1]:  # progressive-dimension training runs a PCA that needs more rows than dimensions
        rq.train_type = faiss.ResidualQuantizer.Train_default
    rq.train(np.ascontiguousarray(x))
    codes = faiss.unpack_bitstrings(rq.compute_codes(x), levels, nbits).astype(np.int64)
    books = faiss.vector_to_array(rq.codebooks).reshape(levels, size, x.shape[1]).astype(np.float32)
    recon = books[np.arange(levels)[None, :], codes].sum(axis=1)
    return Codebook("rqkmeans", books, codes, x, relative_error(x, recon))


def fit_rqvae(
    x: np.ndarray, cfg: CodebookConfig, log: Callable[[dict[str, float], int], None] | None, progress: bool
) -> Codebook:
    device = resolve_device(cfg.device)
    balance = Balance(cfg.load_balance, cfg.balance_strength, cfg.balance_max_factor, cfg.balance_momentum)
    model = RQVAE(x.shape[1], cfg.hidden, cfg.latent_dim, cfg.levels, cfg.codebook_size, balance).to(device)
    settings = TrainSettings(
        beta=cfg.beta,
        uniformity_weight=cfg.uniformity_weight,
        uniformity_threshold=cfg.uniformity_threshold,
        kmeans_init=cfg.kmeans_init,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        batch_size=cfg.batch_size,
        epochs=cfg.epochs,
        seed=cfg.seed,
    )
    xt = torch.from_numpy(x).to(device)
    history = train_rqvae(model, xt, settings, log=log, progress=progress)
    latent, codes, recon = model.encode_codes(xt)
    state = {k: v.cpu() for k, v in model.state_dict().items()}
    books = model.codebooks.detach().cpu().numpy()
    return Codebook("rqvae", books, codes.astype(np.int64), latent, relative_error(x, recon), history, state)


def fit_codebook(
    embeddings: np.ndarray,
    cfg: CodebookConfig,
    log: Callable[[dict[str, float], int], None] | None = None,
    progress: bool = True,
) -> Codebook:
    """Standardise the item embeddings (N, D) and fit the configured tokenizer."""
    if len(embeddings) < cfg.codebook_size:
        raise ValueError(
            f"codebook.codebook_size={cfg.codebook_size} exceeds the {len(embeddings)} items: k-means cannot "
            "initialise more codes than items; lower codebook.codebook_size"
        )
    seed_everything(cfg.seed)
    set_threads(cfg.threads)
    started = time.time()
    x = standardise(embeddings)
    if cfg.tokenizer == "rqkmeans":
        book = fit_rqkmeans(x, cfg.levels, cfg.codebook_size, cfg.seed)
    else:
        book = fit_rqvae(x, cfg, log, progress)
    book.seconds = time.time() - started
    return book


def usage_plot(book: Codebook, path: Path, title: str) -> None:
    """One panel per level: how many items use each code, codes sorted by usage."""
    from s2gr_core.plots import pyplot, save_figure

    levels = book.codebooks.shape[0]
    fig, axes = pyplot().subplots(1, levels, figsize=(4 * levels, 3), dpi=110, squeeze=False)
    for level, ax in enumerate(axes[0]):
        counts = np.sort(np.bincount(book.codes[:, level], minlength=book.size))[::-1]
        stats = usage_stats(book.codes[:, level], book.size)
        ax.bar(np.arange(book.size), counts, width=1.0, color="tab:blue")
        ax.axhline(len(book.codes) / book.size, color="tab:red", lw=1, ls="--", label="uniform")
        ax.set_title(
            f"level {level + 1}: {stats['utilisation']:.1%} used, ppl {stats['perplexity']:.0f}/{book.size}",
            fontsize=9,
        )
        ax.set_xlabel("code (sorted by usage)")
        ax.set_ylabel("items")
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path)
