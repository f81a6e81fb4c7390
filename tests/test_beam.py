"""Constrained beam search over the decoding tables of real SIDs."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from s2gr_core.models.gr.beam import DecodingTables, beam_search
from s2gr_core.semantic.sids import SidTrie, deduplicate

VOCAB = 4


class PrefixModel:
    """A stand-in decoder whose next-code distribution depends on the user and the whole prefix."""

    def __init__(self, n_users: int, positions: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.table = torch.randn(n_users, 5**positions, positions, 8, generator=g) * 2
        self.positions = positions

    def logits(self, user: torch.Tensor, prefix_key: torch.Tensor, position: int) -> torch.Tensor:
        return torch.log_softmax(self.table[user, prefix_key, position], dim=-1)

    def search(self, tables: DecodingTables, n_users: int, beam: int):
        def step(position, last, cache):
            user, key = cache
            key = key if position == 0 else key * 5 + last + 1  # a unique id of the prefix
            vocab = tables.children[position].shape[1]
            return self.logits(user, key, position)[:, :vocab], (user, key)

        def reorder(cache, parent):
            return cache[0][parent], cache[1][parent]

        user = torch.arange(n_users)  # one row per user: the search fans out to the beams
        return beam_search(step, reorder, (user, torch.zeros_like(user)), tables, n_users, beam)

    def exhaustive(self, sids: np.ndarray, user: int, vocab: tuple[int, ...]) -> np.ndarray:
        """Log-probability of every item's SID, scored one item at a time."""
        scores = []
        for sid in sids:
            key, total = 0, 0.0
            for position, code in enumerate(sid):
                logp = self.logits(torch.tensor([user]), torch.tensor([key]), position)[0, : vocab[position]]
                total += float(logp[code])
                key = key * 5 + int(code) + 1
            scores.append(total)
        return np.asarray(scores)


def tiny_catalogue(seed: int, n_items: int) -> tuple[np.ndarray, SidTrie]:
    codes = np.random.default_rng(seed).integers(0, VOCAB, size=(n_items, 2))
    sids = deduplicate(codes)
    return sids, SidTrie.build(sids)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 14))
def test_beam_as_wide_as_the_catalogue_is_the_exhaustive_ranking(seed: int, n_items: int) -> None:
    sids, trie = tiny_catalogue(seed, n_items)
    tables = DecodingTables.from_numpy(trie.children)
    model = PrefixModel(n_users=3, positions=sids.shape[1], seed=seed)
    items, scores = model.search(tables, n_users=3, beam=n_items)
    for user in range(3):
        exact = model.exhaustive(sids, user, trie.vocab)
        order = np.argsort(-exact, kind="stable")
        np.testing.assert_allclose(scores[user].numpy(), exact[order], rtol=1e-5, atol=1e-5)
        assert sorted(items[user].tolist()) == list(range(n_items))
        np.testing.assert_allclose(exact[items[user].numpy()], exact[order], rtol=1e-5, atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(3, 14), st.integers(1, 5))
def test_a_narrow_beam_returns_only_valid_unique_items_best_first(seed: int, n_items: int, beam: int) -> None:
    sids, trie = tiny_catalogue(seed, n_items)
    model = PrefixModel(n_users=2, positions=sids.shape[1], seed=seed)
    items, scores = model.search(DecodingTables.from_numpy(trie.children), n_users=2, beam=beam)
    for user in range(2):
        row = items[user][torch.isfinite(scores[user])].tolist()
        assert len(row) == min(beam, n_items)
        assert len(set(row)) == len(row) and all(0 <= i < n_items for i in row)
        assert torch.all(scores[user][:-1] >= scores[user][1:])
        exact = model.exhaustive(sids, user, trie.vocab)
        np.testing.assert_allclose(scores[user][: len(row)].numpy(), exact[row], rtol=1e-5, atol=1e-5)


def test_a_beam_wider_than_the_catalogue_pads_with_minus_one() -> None:
    sids, trie = tiny_catalogue(0, 3)
    model = PrefixModel(n_users=1, positions=sids.shape[1], seed=0)
    items, scores = model.search(DecodingTables.from_numpy(trie.children), n_users=1, beam=6)
    assert sorted(items[0, :3].tolist()) == [0, 1, 2]
    assert items[0, 3:].tolist() == [-1, -1, -1] and torch.isinf(scores[0, 3:]).all()
