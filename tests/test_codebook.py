"""Residual quantisation: balance rule, uniformity, RQ-VAE training, RQ-KMeans, metrics."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from s2gr_core.config import ConfigError, params_from_dict
from s2gr_core.semantic.codebook import fit_codebook, standardise
from s2gr_core.semantic.quantize import (
    balance_factors,
    collision_stats,
    level_reconstruction,
    select_codes,
    uniformity_loss,
    usage_stats,
)
from s2gr_core.semantic.rqvae import RQVAE, Balance, TrainSettings, train_rqvae
from tests.conftest import repo_params


def codebook_cfg(**changes):
    base = params_from_dict(repo_params()).codebook
    return dataclasses.replace(base, **{"threads": 1, "device": "cpu", **changes})


def test_balance_factors_worked_example() -> None:
    factors = balance_factors(torch.tensor([0.5, 0.25, 0.25, 0.0]), strength=1.0, max_factor=2.0)
    assert factors.tolist() == pytest.approx([2.0, 1.0, 1.0, 0.5])


def test_balanced_selection_moves_points_off_an_overused_code() -> None:
    book = torch.tensor([[0.0], [1.0]])
    x = torch.tensor([[0.45], [0.1]])
    assert select_codes(x, book).tolist() == [0, 0]
    factors = balance_factors(torch.tensor([1.0, 0.0]), strength=1.0, max_factor=2.0)  # code 0 takes everything
    assert select_codes(x, book, factors).tolist() == [1, 0]  # 0.45 is now nearer to the rare code


def test_uniformity_is_zero_for_spread_codewords_and_pushes_close_ones_apart() -> None:
    spread = torch.eye(4) * 10
    assert uniformity_loss(spread, threshold=0.5).item() == 0.0
    bunched = torch.cat([torch.eye(4) * 10, torch.eye(4)[:1] * 10 + 0.01]).requires_grad_(True)
    loss = uniformity_loss(bunched, threshold=0.5)
    loss.backward()
    assert loss.item() > 0
    gap_before = (bunched[0] - bunched[4]).norm()
    stepped = bunched.detach() - 1.0 * bunched.grad
    assert (stepped[0] - stepped[4]).norm() > gap_before


def test_usage_and_collision_statistics() -> None:
    stats = usage_stats(np.array([0, 0, 1, 1]), size=4)
    assert stats == {"utilisation": 0.5, "perplexity": pytest.approx(2.0)}
    assert collision_stats(np.array([[0, 1], [0, 1], [2, 2]])) == {
        "collision_rate": pytest.approx(2 / 3),
        "largest_collision_group": 2,
    }


def test_level_reconstruction_falls_with_each_level() -> None:
    latent = np.array([[3.0, 0.0], [0.0, 4.0]])
    books = np.array([[[3.0, 0.0], [0.0, 3.0]], [[0.0, 0.0], [0.0, 1.0]]])
    codes = np.array([[0, 0], [1, 1]])
    assert level_reconstruction(latent, books, codes) == pytest.approx([1 / 25, 0.0])


def skewed_points(seed: int = 0) -> torch.Tensor:
    """90% of the points in one tight blob, the rest spread out: plain nearest-code selection starves codes."""
    rng = np.random.default_rng(seed)
    blob = rng.normal(scale=0.05, size=(900, 4))
    rest = rng.normal(scale=1.0, size=(100, 4))
    return torch.from_numpy(np.concatenate([blob, rest]).astype(np.float32))


@pytest.mark.parametrize("seed", [0, 1])
def test_load_balancing_raises_utilisation_on_a_skewed_distribution(seed: int) -> None:
    x = skewed_points(seed)
    used = {}
    for enabled in (False, True):
        torch.manual_seed(seed)
        model = RQVAE(4, (16,), 4, levels=1, size=16, balance=Balance(enabled, 1.0, 4.0, 0.9))
        settings = TrainSettings(0.25, 0.0, 0.5, False, 3e-3, 0.0, 100, 30, seed)
        train_rqvae(model, x, settings, progress=False)
        _, codes, _ = model.encode_codes(x)
        used[enabled] = usage_stats(codes[:, 0], 16)["utilisation"]
    assert used[True] > used[False]


def test_rqvae_reduces_reconstruction_error_on_real_embeddings(ml100k_embeddings: np.ndarray) -> None:
    x = torch.from_numpy(standardise(ml100k_embeddings))
    model = RQVAE(x.shape[1], (64,), 16, levels=2, size=8, balance=Balance(True, 1.0, 2.0, 0.9))
    history = train_rqvae(model, x, TrainSettings(0.25, 0.1, 0.5, True, 3e-3, 0.0, 8, 40, 0), progress=False)
    assert history[-1]["recon_error"] < 0.8 * history[0]["recon_error"]
    assert history[-1]["train_recon"] < history[0]["train_recon"]


@pytest.mark.parametrize(
    "changes",
    [
        {"tokenizer": "rqkmeans"},
        {"load_balance": False, "uniformity_weight": 0.0},
        {"load_balance": True, "uniformity_weight": 0.1},
        {"kmeans_init": False},
    ],
    ids=["rqkmeans", "plain", "coba", "random-init"],
)
def test_every_tokenizer_option_gives_codes_for_all_items(ml100k_embeddings: np.ndarray, changes: dict) -> None:
    cfg = codebook_cfg(levels=2, codebook_size=8, epochs=3, batch_size=16, hidden=(32,), latent_dim=8, **changes)
    book = fit_codebook(ml100k_embeddings, cfg, progress=False)
    assert book.codes.shape == (len(ml100k_embeddings), 2) and book.codebooks.shape[:2] == (2, 8)
    assert book.codes.min() >= 0 and book.codes.max() < 8
    metrics = book.metrics()
    assert 0 < metrics["l1_utilisation"] <= 1 and metrics["collision_rate"] <= 1


def test_rqkmeans_is_deterministic(ml100k_embeddings: np.ndarray) -> None:
    cfg = codebook_cfg(tokenizer="rqkmeans", levels=2, codebook_size=8)
    a, b = fit_codebook(ml100k_embeddings, cfg, progress=False), fit_codebook(ml100k_embeddings, cfg, progress=False)
    np.testing.assert_array_equal(a.codes, b.codes)


def test_more_codes_than_items_is_refused(ml100k_embeddings: np.ndarray) -> None:
    with pytest.raises(ValueError, match="codebook_size=64 exceeds the 40 items"):
        fit_codebook(ml100k_embeddings, codebook_cfg(codebook_size=64), progress=False)


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("codebook", "codebook_size", 48, "rqkmeans needs a power of two"),
        ("codebook", "balance_max_factor", 0.5, "balance_max_factor: must be >= 1"),
        ("codebook", "balance_momentum", 1.0, r"balance_momentum: must be in \[0, 1\)"),
        ("codebook", "hidden", [64, 0], "codebook.hidden: widths must be >= 1"),
        ("cooccur", "alpha", 0.0, r"cooccur.alpha: must be in \(0, 1\]"),
        ("cooccur", "window", 0, "cooccur.window: must be >= 1"),
        ("embed", "template", [], "embed.template: must have at least one segment"),
        ("sids", "clusters", 1, "sids.clusters: must be >= 2"),
        ("sids", "clusters", 9, "sids.clusters: 9 exceeds codebook.codebook_size 8"),
    ],
)
def test_bad_parameters_are_named(section: str, key: str, value, message: str) -> None:
    raw = repo_params()
    raw[section][key] = value
    if key == "codebook_size":
        raw["codebook"]["tokenizer"] = "rqkmeans"
    with pytest.raises(ConfigError, match=message):
        params_from_dict(raw)
