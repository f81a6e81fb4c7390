"""The sequence-to-SID model (TIGER and S2GR modes): shapes, masks, caches, gradients, decoding."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from s2gr_core.models.gr import layers
from s2gr_core.models.gr.beam import DecodingTables
from s2gr_core.models.gr.decoding import make_step, recommend, reorder_cache
from s2gr_core.models.gr.layers import Attention, BufferPool, Dims, Dropout, StepCache, attention_dropped, keep_mask
from s2gr_core.models.gr.losses import LossWeights, training_loss
from s2gr_core.models.gr.model import GRSpec, SeqToSID
from s2gr_core.semantic.sids import SidTrie, deduplicate

MODES = {
    "tiger": {"mode": "tiger"},
    "s2gr": {"mode": "s2gr"},
    "s2gr-reasoning-first": {"mode": "s2gr", "reasoning_first": True},
}
WEIGHTS = LossWeights(tau=0.1, align=1.0, interest=1.0, reg=0.5)


def catalogue(n_items: int = 30, seed: int = 0) -> np.ndarray:
    return deduplicate(np.random.default_rng(seed).integers(0, 4, size=(n_items, 3)))


def tiny(sids: np.ndarray, **changes) -> SeqToSID:
    vocab = tuple(int(v) for v in sids.max(0) + 1)
    spec = GRSpec(
        vocab=vocab,
        max_history=5,
        d_model=32,
        heads=2,
        head_dim=16,
        ffn=64,
        encoder_layers=2,
        decoder_layers=2,
        dropout=0.0,
        mode="tiger",
        cluster_dim=8,
    )
    torch.manual_seed(0)
    return SeqToSID(dataclasses.replace(spec, **changes))


def histories(sids: np.ndarray, n: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    items = rng.integers(0, len(sids), size=(n, 6))
    hist = torch.as_tensor(sids[items[:, :5]])
    hist[0, :2] = -1  # a short history: left-padded
    return hist, torch.as_tensor(sids[items[:, 5]])


def decoding_setup(n_items: int, n_users: int, **changes) -> tuple[np.ndarray, SeqToSID, torch.Tensor, DecodingTables]:
    """A catalogue of ``n_items`` SIDs, a tiny model over it, ``n_users`` histories and the trie's tables."""
    sids = catalogue(n_items)
    hist, _ = histories(sids, n=n_users)
    return sids, tiny(sids, **changes), hist, DecodingTables.from_numpy(SidTrie.build(sids).children)


def clusters(model: SeqToSID) -> tuple[torch.Tensor, torch.Tensor]:
    levels = model.spec.levels
    cluster_of_code = torch.arange(max(model.spec.vocab[:levels]))[None].repeat(levels, 1) % 2
    return torch.randn(levels, 2, model.spec.cluster_dim), cluster_of_code


@pytest.mark.parametrize("merge", [False, True])
def test_encoder_shapes_and_padding_mask(merge: bool) -> None:
    sids = catalogue()
    model = tiny(sids, merge_codes=merge, user_buckets=7).eval()
    hist, _ = histories(sids)
    users = torch.arange(len(hist))
    memory, mask = model.encode(hist, users)
    per_item = 1 if merge else sids.shape[1]
    assert memory.shape == (len(hist), 1 + 5 * per_item, 32)
    assert mask.shape == (len(hist), 1, 1, 1 + 5 * per_item)
    assert mask[0, 0, 0, 1 : 1 + 2 * per_item].sum() == 0 and mask[0, 0, 0, 0]  # padded items, user token kept
    # a padded item is marked by its first code; whatever its other codes hold must not reach real tokens
    changed = hist.clone()
    changed[0, :2, 1:] = torch.as_tensor(sids[3, 1:])
    again, again_mask = model.encode(changed, users)
    assert torch.equal(again_mask, mask)
    real = mask[0, 0, 0]
    torch.testing.assert_close(memory[0, real], again[0, real])
    assert not torch.allclose(memory[0, ~real], again[0, ~real])  # (the padded tokens themselves did change)


@pytest.mark.parametrize("preallocate", [False, True])
@pytest.mark.parametrize("mode", list(MODES))
def test_stepwise_decoding_reproduces_teacher_forcing(mode: str, preallocate: bool) -> None:
    """The cached step-by-step decoder (used by beam search) computes exactly the training logits,
    whether its cache grows by concatenation or is written in place."""
    sids = catalogue()
    model = tiny(sids, **MODES[mode]).eval()
    hist, target = histories(sids)
    memory, mask = model.encode(hist)
    forced, thoughts = model.teacher_forced(memory, mask, target)
    assert [lg.shape for lg in forced] == [(len(hist), v) for v in model.spec.vocab]
    assert (thoughts is None) == (mode == "tiger")
    assert_steps_match(model, memory, mask, target, forced, preallocate)


def assert_steps_match(model, memory, mask, target, forced, preallocate: bool = True) -> None:
    """The beam-search step, fed the true codes, gives the teacher-forced log-probabilities."""
    step, cache = make_step(model), model.new_cache(memory, mask, preallocate=preallocate)
    last = torch.full((len(target),), -1)
    for position in range(model.spec.positions):
        logp, cache = step(position, last, cache)
        torch.testing.assert_close(logp, F.log_softmax(forced[position], -1), rtol=1e-4, atol=1e-5)
        cache = reorder_cache(cache, torch.arange(len(target)))
        last = target[:, position]


def test_thinking_vectors_get_gradients_from_alignment_and_regularisation() -> None:
    sids = catalogue()
    model = tiny(sids, mode="s2gr")
    hist, target = histories(sids)
    centroids, cluster_of_code = clusters(model)
    for term in ("align", "reg"):
        model.zero_grad()
        terms = training_loss(model, hist, target, WEIGHTS, centroids, cluster_of_code)
        terms[term].backward()
        assert model.level_pos.grad is not None and model.level_pos.grad.abs().sum() > 0, term
    model.zero_grad()
    training_loss(model, hist, target, WEIGHTS, centroids, cluster_of_code)["reg"].backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.interest.parameters())  # stop-gradient on v_g


@pytest.mark.parametrize(
    ("align", "interest", "reg", "computed"),
    [(0.0, 0.0, 0.0, set()), (0.1, 0.0, 0.0, {"align"}), (0.0, 0.3, 0.0, {"interest", "reg"}),
     (0.0, 0.0, 0.5, {"interest", "reg"}), (1.0, 1.0, 0.5, {"align", "interest", "reg"})],
)  # fmt: skip
def test_auxiliary_terms_with_weight_zero_are_not_computed(
    align: float, interest: float, reg: float, computed: set[str]
) -> None:
    """A zero-weight term would add nothing to the gradient: it is left out (no interest-decoder
    pass when interest and reg are both 0), and the total is the same weighted sum either way."""
    sids = catalogue()
    model = tiny(sids, mode="s2gr").eval()  # no dropout: the full and the skipping runs compare exactly
    hist, target = histories(sids)
    centroids, cluster_of_code = clusters(model)
    weights = LossWeights(tau=0.1, align=align, interest=interest, reg=reg)
    terms = training_loss(model, hist, target, weights, centroids, cluster_of_code)
    assert set(terms) == {"rec", "loss"} | computed
    full = training_loss(model, hist, target, WEIGHTS, centroids, cluster_of_code)
    expected = full["rec"] + align * full["align"] + interest * full["interest"] + reg * full["reg"]
    torch.testing.assert_close(terms["loss"], expected)
    terms["loss"].backward()
    assert all(p.grad is None for p in model.interest.parameters()) == ("interest" not in computed)


@pytest.mark.parametrize(
    ("training", "precision", "contiguous"),
    [(True, "fp32", True), (False, "bf16", True), (False, "fp32", False)],
    ids=["training", "bf16-decoding", "fp32-decoding"],
)
def test_cross_attention_memory_is_laid_out_once_where_matmuls_read_it(
    training: bool, precision: str, contiguous: bool
) -> None:
    """memory_cache hands out contiguous (B, H, S, E) keys/values, the projection's own values, where
    attention runs as batched matmuls (training, bf16 on a CPU); fp32 decoding's SDPA gets the views."""
    sids = catalogue()
    model = tiny(sids, mode="s2gr").train(training)
    hist, _ = histories(sids)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        memory, _ = model.encode(hist)
        kv = model.memory_cache(memory, model.decoder)
        refs = [layer.cross_attn.project_kv(memory) for layer in model.decoder]
    for (k, v), (ref_k, ref_v) in zip(kv, refs, strict=True):
        assert k.is_contiguous() == v.is_contiguous() == contiguous
        torch.testing.assert_close(k, ref_k, rtol=0, atol=0)
        torch.testing.assert_close(v, ref_v, rtol=0, atol=0)


@pytest.mark.parametrize("mode", list(MODES))
def test_a_beam_as_wide_as_the_catalogue_ranks_every_item_by_its_sid_probability(mode: str) -> None:
    sids, model, hist, tables = decoding_setup(20, 3, **MODES[mode])
    items, scores = recommend(model.eval(), hist, tables, beam=len(sids))
    memory, mask = model.encode(hist)
    for user in range(len(hist)):
        one_user = [t[user : user + 1].expand(len(sids), *t.shape[1:]) for t in (memory, mask)]
        forced, _ = model.teacher_forced(*one_user, torch.as_tensor(sids))
        exact = sum(F.log_softmax(lg, -1).gather(1, torch.as_tensor(sids[:, [p]]))[:, 0] for p, lg in enumerate(forced))
        assert sorted(items[user].tolist()) == list(range(len(sids)))
        torch.testing.assert_close(scores[user], exact[items[user]], rtol=1e-4, atol=1e-4)
        assert torch.all(scores[user][:-1] >= scores[user][1:])


@pytest.mark.parametrize("mode", list(MODES))
def test_narrow_beams_return_only_real_unique_items(mode: str) -> None:
    sids, model, hist, tables = decoding_setup(25, 4, **MODES[mode])
    items, scores = recommend(model, hist, tables, beam=7)
    assert items.shape == (4, 7) and torch.isfinite(scores).all()
    assert ((items >= 0) & (items < len(sids))).all()
    assert all(len(set(row.tolist())) == 7 for row in items)


@pytest.mark.parametrize("mode", ["tiger", "s2gr"])
def test_the_model_overfits_a_handful_of_sequences(mode: str) -> None:
    sids = catalogue(30, seed=1)
    model = tiny(sids, mode=mode)
    hist, target = histories(sids, n=8, seed=1)
    hist[0, :2] = torch.as_tensor(sids[0])  # full histories: every example distinct
    centroids, cluster_of_code = clusters(model)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):
        loss = training_loss(model, hist, target, WEIGHTS, centroids, cluster_of_code)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    tables = DecodingTables.from_numpy(SidTrie.build(sids).children)
    items, _ = recommend(model, hist, tables, beam=5)
    truth = SidTrie.build(sids).lookup(target.numpy())
    assert (items[:, 0].numpy() == truth).mean() == 1.0


def test_a_preallocated_step_cache_reorders_rows_and_refuses_to_overflow() -> None:
    k = torch.arange(3.0).reshape(3, 1, 1, 1).expand(3, 2, 1, 4)
    cache = StepCache(room=2)
    cache.append(k, k + 10)
    keys, values = cache.reorder(torch.tensor([2, 2, 0, 1])).append(k[[0, 0, 0, 0]], k[[1, 1, 1, 1]])
    assert keys.shape == (4, 2, 2, 4)
    assert keys[:, 0, 0, 0].tolist() == [2.0, 2.0, 0.0, 1.0]  # the old step moved with its row
    assert keys[:, 0, 1, 0].tolist() == [0.0] * 4 and values[:, 0, 0, 0].tolist() == [12.0, 12.0, 10.0, 11.0]
    with pytest.raises(ValueError, match="holds 2 steps; step 3 does not fit"):
        cache.append(k, k)
        cache.append(k, k)


@pytest.mark.parametrize("pool", [None, BufferPool()], ids=["own-memory", "pooled"])
def test_a_preallocated_cache_reorders_like_a_growing_one(pool: BufferPool | None) -> None:
    """Only the filled steps of a preallocated cache move on reorder; what is read back is the same."""
    gen = torch.Generator().manual_seed(0)
    grown, placed = StepCache(), StepCache(room=4, pool=pool)
    rows = 2
    for width in (3, 3, 5, 5):  # fan out, keep, fan out, keep
        parent = torch.randint(0, rows, (width,), generator=gen)
        k, v = torch.randn(rows, 2, 1, 3, generator=gen), torch.randn(rows, 2, 1, 3, generator=gen)
        expected, got = grown.append(k, v), placed.append(k, v)
        assert all(torch.equal(a, b) for a, b in zip(expected, got, strict=True))
        grown, placed = grown.reorder(parent), placed.reorder(parent)
        rows = parent.shape[0]


def test_a_pooled_cache_reuses_its_memory_and_is_spent_by_reorder() -> None:
    pool = BufferPool()
    cache, pointers = StepCache(room=4, pool=pool), []
    k = torch.randn(3, 2, 1, 3)
    parent = torch.tensor([2, 0, 1])
    for _ in range(4):
        cache.append(k, k)
        spent, cache = cache, cache.reorder(parent)
        with pytest.raises(RuntimeError, match="was reordered and its memory reused"):
            spent.append(k, k)
        with pytest.raises(RuntimeError, match="was reordered and its memory reused"):
            spent.reorder(parent)
        pointers.append({cache.k.data_ptr(), cache.v.data_ptr()})
    assert pointers[2] == pointers[0] and pointers[3] == pointers[1]  # each reorder writes into memory handed back
    assert len(pool.owned[BufferPool.key((3, 2, 4, 3), k)]) == 4  # two buffers (k, v) in turn, no more


@pytest.mark.parametrize("mode", list(MODES))
def test_decoding_calls_that_share_a_pool_return_what_fresh_ones_do(mode: str) -> None:
    _, model, hist, tables = decoding_setup(25, 4, **MODES[mode])
    fresh = recommend(model.eval(), hist, tables, beam=7)
    pool = BufferPool()
    for _ in range(2):
        shared = recommend(model, hist, tables, beam=7, pool=pool)
        assert all(torch.equal(a, b) for a, b in zip(fresh, shared, strict=True))
    owned = sum(len(t) for t in pool.owned.values())
    recommend(model, hist, tables, beam=7, pool=pool)
    assert sum(len(t) for t in pool.owned.values()) == owned > 0  # a further call allocates nothing new


@pytest.mark.parametrize("p", [0.1, 0.5])
@pytest.mark.parametrize("shape", [(3, 7, 11), (64, 1024)])  # 231 elements: not a multiple of 4
def test_keep_mask_drops_at_rate_p_with_independent_lanes(p: float, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    masks = torch.stack([keep_mask(shape, p, torch.device("cpu")) for _ in range(200)])
    assert masks.shape == (200, *shape) and masks.dtype == torch.bool
    n = masks.numel()
    assert abs((~masks).float().mean().item() - p) < 4 * (p * (1 - p) / n) ** 0.5
    # the four 16-bit lanes of a word are independent: neighbours agree as often as chance says
    lanes = masks.flatten(1)[:, : masks[0].numel() // 4 * 4].reshape(200, -1, 4)
    agree = (lanes[..., 0] == lanes[..., 1]).float().mean().item()
    assert abs(agree - (p**2 + (1 - p) ** 2)) < 0.02
    torch.manual_seed(0)
    assert torch.equal(keep_mask(shape, p, torch.device("cpu")), masks[0])  # torch's generator decides


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dropout_scales_what_it_keeps_and_passes_gradients_through_the_mask(dtype: torch.dtype) -> None:
    drop = Dropout(0.25)
    x = torch.randn(32, 50, dtype=dtype).abs().add(0.1).requires_grad_()
    torch.manual_seed(1)
    y = drop(x)
    assert y.dtype == dtype
    kept = y != 0
    torch.testing.assert_close(y[kept], (x / 0.75)[kept])
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.to(dtype) / 0.75)
    torch.manual_seed(1)
    assert torch.equal(drop(x), y)
    drop.eval()
    assert torch.equal(drop(x), x)
    for p, expected in ((0.0, x), (1.0, torch.zeros_like(x))):
        assert torch.equal(Dropout(p)(x), expected)


@pytest.mark.parametrize("case", ["mask", "causal", "none"])
def test_attention_dropped_is_sdpa_with_a_keep_mask_on_the_weights(case: str) -> None:
    torch.manual_seed(0)
    q, k = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 5, 8)
    v = torch.randn(2, 3, 5, 8, requires_grad=True)
    mask = (torch.arange(5) >= torch.tensor([[1], [3]]))[:, None, None, :] if case == "mask" else None
    causal = case == "causal"
    # SDPA over identity values returns its attention weights (B, H, T, S)
    weights = F.scaled_dot_product_attention(q, k, torch.eye(5).expand(2, 3, 5, 5), attn_mask=mask, is_causal=causal)
    torch.manual_seed(7)
    keep = keep_mask(weights.shape, 0.3, torch.device("cpu"))
    torch.manual_seed(7)
    out = attention_dropped(q, k, v, mask, causal, 0.3)
    torch.testing.assert_close(out, torch.where(keep, weights / 0.7, 0.0) @ v)
    out.sum().backward()
    torch.testing.assert_close(
        v.grad, (torch.where(keep, weights / 0.7, 0.0).transpose(-2, -1)).sum(-1, keepdim=True).expand_as(v)
    )


def test_attention_draws_its_own_mask_in_cpu_training_and_is_sdpa_otherwise() -> None:
    torch.manual_seed(0)
    attn = Attention(Dims(d_model=16, heads=2, head_dim=8, ffn=32, dropout=0.25))
    x = torch.randn(3, 4, 16)
    k, v = attn.project_kv(x)
    mask = torch.ones(3, 1, 1, 4, dtype=torch.bool)
    eval_out = attn.eval()(x, k, v, mask)
    q = attn.q(x).view(3, 4, 2, 8).transpose(1, 2)
    sdpa = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(eval_out, attn.out(sdpa.transpose(1, 2).flatten(2)))
    attn.train()
    torch.manual_seed(3)
    train_out = attn(x, k, v, mask)
    torch.manual_seed(3)
    torch.testing.assert_close(
        train_out, attn.out(attention_dropped(q, k, v, mask, False, 0.25).transpose(1, 2).flatten(2))
    )
    assert not torch.allclose(train_out, eval_out)


def test_cpu_bf16_attention_runs_as_matmuls_and_agrees_with_sdpa(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    attn = Attention(Dims(d_model=16, heads=2, head_dim=8, ffn=32, dropout=0.25)).eval().bfloat16()
    x = torch.randn(6, 3, 16, dtype=torch.bfloat16)  # 3 beams of each of 2 users: a grouped query
    k, v = attn.project_kv(torch.randn(2, 5, 16, dtype=torch.bfloat16))
    mask = (torch.arange(5) >= torch.tensor([[0], [2]]))[:, None, None, :]
    calls = []
    monkeypatch.setattr(layers, "attention_dropped", lambda *a: calls.append(a) or attention_dropped(*a))
    out = attn(x, k, v, mask)
    assert len(calls) == 1 and calls[0][-1] == 0.0  # the matmul path, no dropout
    q = attn.q(x).view(2, 3, 3, 2, 8).permute(0, 3, 1, 2, 4).reshape(2, 2, 9, 8)
    sdpa = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask)
    want = attn.out(sdpa.reshape(2, 2, 3, 3, 8).permute(0, 2, 3, 1, 4).reshape(6, 3, 16).bfloat16())
    torch.testing.assert_close(out, want, atol=0.02, rtol=0.02)
    assert not layers.matmul_attends(q.float(), 0.0)  # fp32 evaluation keeps SDPA
