"""SID de-duplication, constrained-decoding tables and reasoning clusters."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from s2gr_core.semantic.sids import SidTrie, changed_share, code_clusters, deduplicate


def test_dedup_numbers_items_within_a_collision_group_by_item_id() -> None:
    codes = np.array([[1, 2], [0, 0], [1, 2], [1, 2]])
    assert deduplicate(codes).tolist() == [[1, 2, 0], [0, 0, 0], [1, 2, 1], [1, 2, 2]]


@settings(max_examples=60, deadline=None)
@given(arrays(np.int64, st.tuples(st.integers(1, 60), st.integers(1, 3)), elements=st.integers(0, 3)))
def test_dedup_sids_are_unique_and_keep_the_codes(codes: np.ndarray) -> None:
    sids = deduplicate(codes)
    assert sids.shape == (codes.shape[0], codes.shape[1] + 1)
    np.testing.assert_array_equal(sids[:, :-1], codes)
    assert len(np.unique(sids, axis=0)) == len(sids)


@settings(max_examples=60, deadline=None)
@given(arrays(np.int64, st.tuples(st.integers(1, 60), st.integers(1, 3)), elements=st.integers(0, 4)))
def test_tables_accept_exactly_the_sids_of_real_items(codes: np.ndarray) -> None:
    sids = deduplicate(codes)
    trie = SidTrie.build(sids)
    np.testing.assert_array_equal(trie.enumerate(), sids)  # every accepted path is a real item's SID
    np.testing.assert_array_equal(trie.lookup(sids), np.arange(len(sids)))
    # a SID that is not in the catalogue maps to -1
    everything = np.stack(np.meshgrid(*[np.arange(v) for v in trie.vocab], indexing="ij"), -1).reshape(
        -1, sids.shape[1]
    )
    real = {tuple(r) for r in sids.tolist()}
    fake = np.array([r for r in everything.tolist() if tuple(r) not in real]).reshape(-1, sids.shape[1])
    assert (trie.lookup(fake) == -1).all()


def test_worked_example_from_the_docstring() -> None:
    trie = SidTrie.build(np.array([[1, 0], [1, 1], [0, 0]]))
    assert trie.children[0].tolist() == [[0, 1]]
    assert trie.children[1].tolist() == [[2, -1], [0, 1]]


def test_lookup_rejects_out_of_range_codes() -> None:
    trie = SidTrie.build(np.array([[1, 0], [0, 0]]))
    assert trie.lookup(np.array([[5, 0], [0, -1], [0, 0]])).tolist() == [-1, -1, 1]


def test_tables_round_trip_through_a_file(tmp_path) -> None:
    sids = deduplicate(np.random.default_rng(0).integers(0, 4, size=(50, 3)))
    trie = SidTrie.build(sids)
    trie.save(tmp_path / "trie.npz")
    again = SidTrie.load(tmp_path / "trie.npz")
    assert again.vocab == trie.vocab
    np.testing.assert_array_equal(again.lookup(sids), np.arange(50))


def test_clusters_group_nearby_codewords() -> None:
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 10.0]])
    level = np.concatenate([c + rng.normal(scale=0.1, size=(8, 2)) for c in centres]).astype(np.float32)
    assign, centroids = code_clusters(level[None], n_clusters=2, seed=0)
    assert assign.shape == (1, 16) and centroids.shape == (1, 2, 2)
    assert len(set(assign[0, :8])) == 1 and len(set(assign[0, 8:])) == 1 and assign[0, 0] != assign[0, 8]


def test_more_clusters_than_codes_is_refused() -> None:
    with pytest.raises(ValueError, match="at least k=5 points"):
        code_clusters(np.zeros((1, 3, 2), dtype=np.float32), n_clusters=5, seed=0)


def test_changed_share() -> None:
    old = np.array([[0, 1], [1, 1]])
    assert changed_share(old, np.array([[0, 1], [1, 0]])) == 0.5
    assert changed_share(None, old) is None
    assert changed_share(old[:1], old) is None
