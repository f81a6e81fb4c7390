"""Co-occurrence graph and personalised-PageRank smoothing (METHOD.md §3)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from s2gr_core.semantic.graph import cooccurrence, graph_stats, normalise, ppr_weights, smooth
from s2gr_core.split import leave_one_out


def test_counts_pairs_within_the_window_symmetrically() -> None:
    adj = cooccurrence([np.array([0, 1, 2]), np.array([1, 2])], n_items=4, window=1).toarray()
    expected = np.zeros((4, 4))
    expected[0, 1] = expected[1, 0] = 1
    expected[1, 2] = expected[2, 1] = 2
    np.testing.assert_array_equal(adj, expected)


@pytest.mark.parametrize(("weighting", "far"), [("uniform", 1.0), ("inverse_distance", 0.5)])
def test_window_and_weighting(weighting: str, far: float) -> None:
    adj = cooccurrence([np.array([0, 1, 2])], n_items=3, window=2, weighting=weighting).toarray()
    assert adj[0, 2] == adj[2, 0] == far
    assert adj[0, 1] == 1.0
    assert np.all(np.diag(adj) == 0)


def test_pairs_never_cross_users_and_repeats_are_not_self_loops() -> None:
    adj = cooccurrence([np.array([0, 0]), np.array([1])], n_items=2, window=3).toarray()
    assert adj.sum() == 0


def test_rejects_unknown_items() -> None:
    with pytest.raises(ValueError, match=r"item ids must lie in \[0, 2\)"):
        cooccurrence([np.array([0, 5])], n_items=2, window=1)


def test_appnp_smoothing_equals_a_hand_computation_on_four_nodes() -> None:
    # path graph 0-1-2-3; alpha 0.5, K 2; features: one-hot rows
    a = sp.csr_matrix(np.array([[0, 1, 0, 0], [1, 0, 1, 0], [0, 1, 0, 1], [0, 0, 1, 0]], dtype=np.float32))
    x = np.eye(4, dtype=np.float32)
    deg = np.array([1, 2, 2, 1.0])
    a_hat = a.toarray() / np.sqrt(np.outer(deg, deg))
    np.testing.assert_allclose(normalise(a).toarray(), a_hat, rtol=1e-6)
    h0 = x
    h1 = 0.5 * a_hat @ h0 + 0.5 * x
    h2 = 0.5 * a_hat @ h1 + 0.5 * x
    beta = np.array([0.5, 0.25, 0.125]) / 0.875
    np.testing.assert_allclose(ppr_weights(0.5, 2), beta)
    np.testing.assert_allclose(
        smooth(x, normalise(a), alpha=0.5, hops=2), beta[0] * h0 + beta[1] * h1 + beta[2] * h2, rtol=1e-6
    )
    # by hand: h0[0,0] = 1, h1[0,0] = 0.5, h2[0,0] = 0.5 * (1/√2) * (0.5/√2) + 0.5 = 0.625
    assert smooth(x, normalise(a), 0.5, 2)[0, 0] == pytest.approx((0.5 * 1 + 0.25 * 0.5 + 0.125 * 0.625) / 0.875)


def test_isolated_item_keeps_its_direction() -> None:
    a = sp.csr_matrix((3, 3), dtype=np.float32)
    x = np.array([[1.0, 2.0], [3.0, 4.0], [0.0, 1.0]], dtype=np.float32)
    out = smooth(x, normalise(a), alpha=0.3, hops=3)
    np.testing.assert_allclose(
        out / np.linalg.norm(out, axis=1, keepdims=True), x / np.linalg.norm(x, axis=1, keepdims=True), rtol=1e-6
    )


def test_zero_hops_is_the_identity() -> None:
    x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    a = cooccurrence([np.array([0, 1, 2, 3, 4])], 5, 2)
    np.testing.assert_allclose(smooth(x, normalise(a), alpha=0.2, hops=0), x, rtol=1e-6)


def test_the_graph_never_sees_validation_or_test_targets() -> None:
    # user 0: 0 1 | 2 (valid) | 3 (test); user 1: 1 0 | 4 | 5 -> train pairs are only (0, 1)
    frame = pd.DataFrame(
        {"user_id": [0] * 4 + [1] * 4, "item_id": [0, 1, 2, 3, 1, 0, 4, 5], "position": list(range(4)) * 2}
    )
    split = leave_one_out(frame, max_history=20)
    sequences = [np.asarray(s, dtype=np.int64) for s in split.train["item_ids"].to_pylist()]
    adj = cooccurrence(sequences, n_items=6, window=5).toarray()
    assert adj[0, 1] == adj[1, 0] == 2
    assert adj[:, 2:].sum() == 0 and adj[2:, :].sum() == 0


def test_stats() -> None:
    stats = graph_stats(cooccurrence([np.array([0, 1, 2])], n_items=4, window=1))
    assert (stats.edges, stats.isolated_items, stats.degree_max) == (2, 1, 2.0)
    assert stats.density == pytest.approx(2 / 6)
