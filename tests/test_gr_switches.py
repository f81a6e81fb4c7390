"""The loss-balance and reasoning-chain switches of TIGER / S2GR (issue "S2GR earns its name"):
what each computes, where its gradients go and where they must not, and the validation signals."""

from __future__ import annotations

import dataclasses
import doctest
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from s2gr_core.config import ConfigError, Params, params_from_dict
from s2gr_core.models.gr import diagnostics, train
from s2gr_core.models.gr.diagnostics import cluster_accuracy, validation_signals
from s2gr_core.models.gr.losses import (
    cluster_centroids,
    interest_loss,
    position_ce,
    rec_loss,
    training_loss,
)
from s2gr_core.models.gr.train import GRTrainer, clip_groups, lr_factor, param_groups
from s2gr_core.models.runtime import runtime_for
from s2gr_core.semantic import sids as sids_module
from s2gr_core.semantic.sids import code_clusters, cosine_mismatch
from s2gr_core.split import load_train
from s2gr_core.stages.generative import load_semantic
from tests.conftest import repo_params
from tests.test_gr_model import WEIGHTS, assert_steps_match, catalogue, clusters, histories, tiny


def s2gr_model(**changes):
    sids = catalogue()
    model = tiny(sids, mode="s2gr", **changes)
    hist, target = histories(sids)
    return model, hist, target, *clusters(model)


def grads(model: torch.nn.Module, loss: torch.Tensor) -> dict[str, torch.Tensor | None]:
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {name: p.grad for name, p in model.named_parameters()}


def reached(g: torch.Tensor | None) -> bool:
    return g is not None and bool(g.abs().sum() > 0)


def test_docstring_examples_hold() -> None:
    for module in (train, diagnostics, sids_module):
        assert doctest.testmod(module).failed == 0, module.__name__


def test_sum_reduction_is_the_sid_nll_and_p_times_the_mean() -> None:
    model, hist, target, *_ = s2gr_model()
    memory, mask = model.encode(hist)
    logits, _ = model.teacher_forced(memory, mask, target)
    ce = position_ce(logits, target)
    assert ce.shape == (model.spec.positions,)
    manual = -sum(F.log_softmax(lg, -1).gather(1, target[:, p : p + 1]).mean() for p, lg in enumerate(logits))
    torch.testing.assert_close(rec_loss(logits, target, "sum"), manual)
    torch.testing.assert_close(rec_loss(logits, target, "sum"), model.spec.positions * rec_loss(logits, target))


def test_model_space_centroids_are_cluster_means_of_the_code_rows() -> None:
    model, _, _, centroids, cluster_of_code = s2gr_model()
    for space, table in (("input_codes", model.dec_codes.weight), ("output_codes", model.head.weight)):
        cents = cluster_centroids(model, centroids, cluster_of_code, space)
        assert len(cents) == model.spec.levels and not any(c.requires_grad for c in cents)
        for level, c in enumerate(cents):
            start = model.code_offsets[level]
            rows = table[start : start + model.spec.vocab[level]].detach()
            members = cluster_of_code[level, : model.spec.vocab[level]]
            for k in range(c.shape[0]):
                torch.testing.assert_close(c[k], rows[members == k].mean(0))
    assert cluster_centroids(model, centroids, cluster_of_code, "projection")[0] is not None


@pytest.mark.parametrize("space", ["projection", "input_codes", "output_codes"])
def test_alignment_shapes_t_l_and_never_the_code_tables_it_points_at(space: str) -> None:
    model, hist, target, centroids, cluster_of_code = s2gr_model()
    weights = dataclasses.replace(WEIGHTS, align_space=space)
    g = grads(model, training_loss(model, hist, target, weights, centroids, cluster_of_code)["align"])
    assert reached(g["level_pos"]) and reached(g["bos"])  # t_l, and the chain that produced it
    assert not reached(g["head.weight"])
    assert reached(g["align.0.weight"]) == (space == "projection")  # no projection in the model's own space


def test_level_weights_select_levels_and_must_match_the_sid_length() -> None:
    model, hist, target, centroids, cluster_of_code = s2gr_model()
    torch.manual_seed(0)
    full = training_loss(model, hist, target, WEIGHTS, centroids, cluster_of_code)["align"]
    parts = [
        training_loss(
            model, hist, target, dataclasses.replace(WEIGHTS, align_levels=tuple(float(i == j) for i in range(3))),
            centroids, cluster_of_code,
        )["align"]
        for j in range(3)
    ]  # fmt: skip
    torch.testing.assert_close(sum(parts), full)
    with pytest.raises(ValueError, match="align_level_weights: 2 weights for 3 SID levels"):
        training_loss(
            model, hist, target, dataclasses.replace(WEIGHTS, align_levels=(1.0, 1.0)), centroids, cluster_of_code
        )


def test_align_tau_overrides_tau_for_alignment_only() -> None:
    model, hist, target, centroids, cluster_of_code = s2gr_model()
    base = training_loss(model, hist, target, WEIGHTS, centroids, cluster_of_code)
    same = training_loss(model, hist, target, dataclasses.replace(WEIGHTS, align_tau=0.1), centroids, cluster_of_code)
    other = training_loss(model, hist, target, dataclasses.replace(WEIGHTS, align_tau=1.0), centroids, cluster_of_code)
    torch.testing.assert_close(same["align"], base["align"])
    assert not torch.allclose(other["align"], base["align"])
    torch.testing.assert_close(other["interest"], base["interest"])


@pytest.mark.parametrize("detach", [False, True])
def test_interest_target_detached_sends_no_gradient_into_the_code_table(detach: bool) -> None:
    model, hist, target, *_ = s2gr_model()
    memory, mask = model.encode(hist)
    v_g = model.global_interest(memory, mask)
    g = grads(model, interest_loss(model, v_g, target, 0.1, detach=detach))
    assert reached(g["dec_codes.weight"]) != detach
    assert reached(g["interest_query"])


def test_a_levels_only_interest_target_ignores_the_dedup_code() -> None:
    model, hist, target, *_ = s2gr_model()
    memory, mask = model.encode(hist)
    v_g = model.global_interest(memory, mask)
    other = target.clone()
    other[:, -1] = (other[:, -1] + 1) % model.spec.vocab[-1]
    same = [interest_loss(model, v_g, t, 0.1, levels_only=True) for t in (target, other)]
    torch.testing.assert_close(same[0], same[1])
    assert not torch.allclose(interest_loss(model, v_g, target, 0.1), interest_loss(model, v_g, other, 0.1))


def test_a_detached_chain_stops_alignment_at_the_thought() -> None:
    for detach in (False, True):
        model, hist, target, centroids, cluster_of_code = s2gr_model(thought_detach=detach)
        g = grads(model, training_loss(model, hist, target, WEIGHTS, centroids, cluster_of_code)["align"])
        assert reached(g["level_pos"]) and reached(g["align.0.weight"])
        assert reached(g["bos"]) != detach  # t_1 = sg(h_BOS) + p_1: nothing flows back into the decoder
        assert reached(g["enc_codes.weight"]) != detach


@pytest.mark.parametrize("norm", [False, True])
@pytest.mark.parametrize("source", ["output", "residual"])
def test_the_thinking_vector_starts_from_the_state_asked_for(source: str, norm: bool) -> None:
    model, hist, target, *_ = s2gr_model(thought_source=source, thought_norm=norm)
    model.eval()
    memory, mask = model.encode(hist)
    _, thoughts = model.teacher_forced(memory, mask, target)
    states = model.decode_states(model.bos.expand(len(hist), 1, -1), 0, model.new_cache(memory, mask))[:, 0]
    h = states if source == "residual" else model.dec_norm(states)
    if norm:  # a fresh LayerNorm: unit gain, zero bias
        h = F.layer_norm(h, h.shape[-1:])
    torch.testing.assert_close(thoughts[:, 0], h + model.level_pos[0])
    assert (model.thought_norm is not None) == norm
    assert not torch.allclose(states, model.dec_norm(states))  # the two sources differ


def test_the_thought_norm_learns_from_alignment_and_sits_in_the_trunk() -> None:
    model, hist, target, centroids, cluster_of_code = s2gr_model(thought_norm=True)
    g = grads(model, training_loss(model, hist, target, WEIGHTS, centroids, cluster_of_code)["align"])
    assert reached(g["thought_norm.weight"]) and reached(g["thought_norm.bias"])
    trunk = clip_groups(model, "per_module")[0]
    assert any(p is model.thought_norm.weight for p in trunk)
    no_decay = param_groups(model, 0.01, "weights")[1]["params"]
    assert any(p is model.thought_norm.weight for p in no_decay)


@pytest.mark.parametrize(("position", "dropout"), [(True, True), (False, True), (True, False), (False, False)])
def test_thinking_inputs_take_position_and_dropout_only_when_asked(position: bool, dropout: bool) -> None:
    model, *_ = s2gr_model(thought_position=position, thought_dropout=dropout, dropout=0.5)
    model.train()
    x = torch.ones(64, 3, model.spec.d_model)  # steps 1 (t_1), 2 (s_1), 3 (t_2)
    h = model.step_inputs(x, 1)
    pos = model.dec_pos.weight[1:4].detach()
    for row in (0, 2):  # thinking rows
        expected = x[:, row] + (pos[row] if position else 0)
        dropped = (h[:, row] == 0).float().mean()
        if dropout:
            assert 0.3 < dropped < 0.7
        else:
            torch.testing.assert_close(h[:, row], expected)
    assert 0.3 < (h[:, 1] == 0).float().mean() < 0.7  # a code row is always dropped out


@pytest.mark.parametrize(
    "changes",
    [
        {"thought_position": False},
        {"thought_position": False, "thought_dropout": False, "thought_detach": True, "level_pos_init": 1.0},
        {"thought_position": False, "reasoning_first": True},
        {"thought_source": "residual"},
        {"thought_source": "residual", "thought_norm": True, "thought_detach": True},
        {"thought_norm": True, "reasoning_first": True},
    ],
)
def test_decoding_still_reproduces_teacher_forcing_under_the_chain_switches(changes: dict) -> None:
    model, hist, target, *_ = s2gr_model(**changes)
    model.eval()
    if "level_pos_init" in changes:
        assert model.level_pos.std() > 0.5
    memory, mask = model.encode(hist)
    forced, _ = model.teacher_forced(memory, mask, target)
    assert_steps_match(model, memory, mask, target, forced)


def test_weight_decay_groups_leave_norms_biases_embeddings_and_free_vectors_alone() -> None:
    model, *_ = s2gr_model()
    (everything,) = param_groups(model, 0.1, "all")
    assert everything["weight_decay"] == 0.1 and len(everything["params"]) == len(list(model.parameters()))
    decay, rest = param_groups(model, 0.1, "weights")
    assert decay["weight_decay"] == 0.1 and rest["weight_decay"] == 0.0
    ids = lambda params: {id(p) for p in params}  # noqa: E731
    assert ids(decay["params"]) | ids(rest["params"]) == ids(model.parameters())
    assert not ids(decay["params"]) & ids(rest["params"])
    named = dict(model.named_parameters())
    for name in ("bos", "level_pos", "interest_query", "enc_codes.weight", "dec_codes.weight", "dec_norm.weight"):
        assert id(named[name]) in ids(rest["params"]), name
    assert id(named["head.weight"]) in ids(decay["params"])
    assert all(p.ndim == 2 for p in decay["params"])


def test_per_module_clipping_keeps_a_huge_auxiliary_gradient_off_the_trunk() -> None:
    model, *_ = s2gr_model()
    groups = clip_groups(model, "per_module")
    assert len(groups) == 1 + 4  # trunk, align, interest, interest_query, interest_norm
    assert sum(len(g) for g in groups) == len(list(model.parameters()))
    assert len(clip_groups(model, "global")) == 1
    for p in model.parameters():
        p.grad = torch.full_like(p, 1e-4)
    for p in model.align.parameters():
        p.grad = torch.full_like(p, 1e3)
    trunk_before = model.head.weight.grad.clone()
    for params in groups:
        torch.nn.utils.clip_grad_norm_(params, 1.0)
    torch.testing.assert_close(model.head.weight.grad, trunk_before)  # the trunk's small step is untouched
    assert torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in model.align.parameters()])) <= 1.0 + 1e-5


def test_the_cosine_schedule_anneals_within_the_budget_given() -> None:
    assert lr_factor(0, 10, 100) == pytest.approx(0.1) and lr_factor(9, 10, 100) == pytest.approx(1.0)
    assert lr_factor(55, 10, 100) == pytest.approx(0.5) and lr_factor(100, 10, 100) == 0.0
    assert lr_factor(500, 10, 100) == 0.0  # stays annealed past the budget


def test_the_trainer_anneals_over_schedule_epochs(params: Params, sid_root: Path) -> None:
    sem = load_semantic(sid_root / "data" / "sids", 40)
    users, sequences = load_train(str(sid_root / "data" / "split" / "train.parquet"))
    runtime = runtime_for("cpu", 1, "fp32", False)
    for schedule_epochs, annealed in ((1, True), (0, False)):
        cfg = dataclasses.replace(
            params.s2gr, warmup_steps=0, batch_size=16, schedule_epochs=schedule_epochs, max_epochs=5
        )
        trainer = GRTrainer(cfg, "s2gr", sem, users, sequences, 20, runtime)
        assert len(trainer.batches(np.random.default_rng(0))) > 2
        trainer.epoch(1, np.random.default_rng(0), progress=False)
        lr = trainer.optim.param_groups[0]["lr"]
        assert (lr == 0.0) == annealed, (schedule_epochs, lr)


def test_cluster_accuracy_matches_a_hand_count() -> None:
    sims = torch.tensor(
        [[[0.9, 0.1, 0.0], [0.1, 0.2, 0.7]], [[0.2, 0.5, 0.3], [0.6, 0.3, 0.1]], [[0.1, 0.1, 0.8], [0.3, 0.4, 0.3]]]
    )  # 3 users, 2 levels, 3 clusters: best clusters [[0, 2], [1, 0], [2, 1]]
    truth = torch.tensor([[0, 2], [0, 0], [2, 2]])
    assert cluster_accuracy(sims, truth).tolist() == pytest.approx([2 / 3, 2 / 3])


@pytest.mark.parametrize("mode", ["tiger", "s2gr"])
def test_validation_signals_are_the_teacher_forced_nll_and_reasoning_accuracy(mode: str) -> None:
    sids = catalogue()
    model = tiny(sids, mode=mode).eval()
    centroids, cluster_of_code = clusters(model)
    rng = np.random.default_rng(1)
    hists = [rng.integers(0, len(sids), size=n) for n in (1, 3, 5, 7, 2)]
    targets = rng.integers(0, len(sids), size=5)
    out = validation_signals(
        model, hists, np.arange(5), targets, sids, WEIGHTS, centroids, cluster_of_code, batch_size=2
    )
    # the same numbers from one padded batch, by hand
    from s2gr_core.models.gr.data import left_padded, sid_tensor

    hist = sid_tensor(left_padded(hists, 5), sids)
    target = torch.as_tensor(sids[targets])
    with torch.no_grad():
        memory, mask = model.encode(hist)
        logits, thoughts = model.teacher_forced(memory, mask, target)
    ce = position_ce(logits, target)
    assert out["sid_nll"] == pytest.approx(float(ce.sum()), rel=1e-5)
    assert [out[f"ce_{n}"] for n in ("s1", "s2", "s3", "dedup")] == pytest.approx(ce.tolist(), rel=1e-5)
    if mode == "tiger":
        assert not any(k.startswith(("align", "cluster_acc")) for k in out)
        return
    with torch.no_grad():
        proj = [
            F.normalize(model.align[i](thoughts[:, i]), dim=-1) @ F.normalize(centroids[i], dim=-1).T for i in range(3)
        ]
    truth = cluster_of_code[torch.arange(3), target[:, :3]]
    for level in range(3):
        acc = float((proj[level].argmax(-1) == truth[:, level]).float().mean())
        assert out[f"cluster_acc_l{level + 1}"] == pytest.approx(acc)
        majority = max(truth[:, level].tolist().count(c) for c in range(2)) / 5
        assert out[f"cluster_majority_l{level + 1}"] == pytest.approx(majority)
        assert out[f"align_l{level + 1}"] == pytest.approx(
            float(F.cross_entropy(proj[level] / 0.1, truth[:, level])), rel=1e-5
        )


def test_spherical_clusters_agree_with_the_cosine_score() -> None:
    rng = np.random.default_rng(0)
    books = rng.normal(size=(2, 64, 6)) * rng.uniform(0.1, 5.0, size=(2, 64, 1))  # mixed norms
    assign, centroids = code_clusters(books, 4, seed=0, metric="cosine")
    assert assign.shape == (2, 64) and centroids.shape == (2, 4, 6)
    np.testing.assert_allclose(np.linalg.norm(centroids, axis=-1), 1.0, rtol=1e-4)
    assert cosine_mismatch(books, assign, centroids) == 0.0
    e_assign, e_centroids = code_clusters(books, 4, seed=0)
    assert 0.0 < cosine_mismatch(books, e_assign, e_centroids) < 1.0  # euclidean clusters disagree with cosine


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"s2gr": {"align_tau": -0.1}}, r"align_tau: must be >= 0"),
        ({"s2gr": {"align_level_weights": [1.0, -1.0]}}, r"align_level_weights: must all be >= 0"),
        ({"s2gr": {"align_space": "pca"}}, r"s2gr.align_space: must be one of"),
        ({"s2gr": {"interest_target": "dedup"}}, r"s2gr.interest_target: must be one of"),
        ({"s2gr": {"level_pos_init": -1.0}}, r"level_pos_init: must be >= 0"),
        ({"s2gr": {"thought_source": "hidden"}}, r"s2gr.thought_source: must be one of"),
        ({"tiger": {"clip_norm": -1.0}}, r"clip_norm: must be >= 0"),
        ({"tiger": {"clip_scope": "layer"}}, r"tiger.clip_scope: must be one of"),
        ({"tiger": {"schedule_epochs": -2}}, r"schedule_epochs: must be >= 0"),
        ({"tiger": {"rec_reduction": "max"}}, r"tiger.rec_reduction: must be one of"),
        ({"tiger": {"decay_groups": "none"}}, r"tiger.decay_groups: must be one of"),
        ({"sids": {"cluster_metric": "manhattan"}}, r"sids.cluster_metric: must be one of"),
    ],
)
def test_bad_switch_values_are_named(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        params_from_dict(repo_params(**overrides))
