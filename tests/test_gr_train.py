"""TIGER / S2GR training on the pipeline's own SIDs: examples, resume after an interruption, stage outputs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from s2gr_core.config import Params
from s2gr_core.evaluation.predictions import read_predictions
from s2gr_core.models.gr.data import left_padded, sid_tensor, training_examples
from s2gr_core.models.gr.train import train_gr
from s2gr_core.split import load_eval, load_train
from s2gr_core.stages import get_stage
from s2gr_core.stages.generative import load_semantic


def test_examples_are_every_next_item_with_its_left_padded_history() -> None:
    history, targets = training_examples([np.array([5, 7, 9]), np.array([1, 2])], max_history=2)
    assert history.tolist() == [[-1, 5], [5, 7], [-1, 1]] and targets.tolist() == [7, 9, 2]
    assert left_padded([np.array([5, 7, 9]), np.array([1])], 2).tolist() == [[7, 9], [-1, 1]]
    sids = np.array([[0, 1], [1, 0]])
    assert sid_tensor(np.array([[-1, 1]]), sids).tolist() == [[[-1, -1], [1, 0]]]


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("mode", ["tiger", "s2gr"])
def test_training_resumes_after_an_interruption(mode: str, params: Params, sid_root: Path) -> None:
    n_items = 40
    sem = load_semantic(sid_root / "data" / "sids", n_items)
    users, sequences = load_train(str(sid_root / "data" / "split" / "train.parquet"))
    valid = load_eval(str(sid_root / "data" / "split" / "valid.parquet"))
    cfg = dataclasses.replace(getattr(params, mode), max_epochs=3, patience=3, threads=1)
    if mode == "s2gr":  # every auxiliary term on (a zero-weight term is not computed, so not logged)
        cfg = dataclasses.replace(cfg, align_weight=0.1, interest_weight=0.3, reg_weight=0.5)
    ckpt = sid_root / "models" / mode

    def stop_in_epoch_2(row: dict, epoch: int) -> None:
        if epoch == 2:
            raise Interrupt  # killed after epoch 2 ran, before its checkpoint: last.pt holds epoch 1

    args = (cfg, mode, sem, users, sequences, valid, 20, ckpt, (10,), 64)
    with pytest.raises(Interrupt):
        train_gr(*args, log=stop_in_epoch_2, progress=False)
    resumed = train_gr(*args, progress=False)
    assert resumed.resumed_from == 1
    assert [row["epoch"] for row in resumed.history] == [1, 2, 3]
    if mode == "s2gr":  # each S2GR loss term is tracked on its own
        assert {"train_rec", "train_align", "train_interest", "train_reg"} <= set(resumed.history[-1])
    # speeds cover every epoch of the history, not only those this process ran
    assert resumed.seconds_per_epoch == pytest.approx(np.mean([row["epoch_seconds"] for row in resumed.history]))
    assert resumed.samples_per_second == pytest.approx(np.mean([r["train_samples_per_s"] for r in resumed.history]))


def test_a_run_stopped_early_finishes_from_its_checkpoints_with_its_speeds(params: Params, sid_root: Path) -> None:
    """A killed run resumed with ``max_epochs`` = its last epoch trains nothing and keeps its timings."""
    sem = load_semantic(sid_root / "data" / "sids", 40)
    users, sequences = load_train(str(sid_root / "data" / "split" / "train.parquet"))
    valid = load_eval(str(sid_root / "data" / "split" / "valid.parquet"))
    cfg = dataclasses.replace(params.tiger, max_epochs=2, patience=5, threads=1)

    def stop_in_epoch_3(row: dict, epoch: int) -> None:
        if epoch == 3:
            raise Interrupt

    ckpt = sid_root / "models" / "tiger"
    with pytest.raises(Interrupt):
        train_gr(
            dataclasses.replace(cfg, max_epochs=4),
            "tiger",
            sem,
            users,
            sequences,
            valid,
            20,
            ckpt,
            (10,),
            64,
            log=stop_in_epoch_3,
            progress=False,
        )
    finished = train_gr(cfg, "tiger", sem, users, sequences, valid, 20, ckpt, (10,), 64, progress=False)
    assert finished.resumed_from == 2 and finished.epochs_run == 2
    assert finished.seconds_per_epoch > 0 and finished.samples_per_second > 0


@pytest.mark.parametrize("mode", ["tiger", "s2gr"])
def test_stage_writes_valid_prediction_lists(mode: str, params: Params, sid_root: Path) -> None:
    result = get_stage(f"train_{mode}").run(params, sid_root)
    assert result.tags["model"] == mode and result.metrics["inference_users_per_s"] > 0
    for split in ("valid", "test"):
        split_users = load_eval(str(sid_root / "data" / "split" / f"{split}.parquet"))[0]
        path = sid_root / "predictions" / mode / f"{split}.parquet"
        lists = read_predictions(path, split_users, 40, params.inference.top_k)  # raises on invalid/duplicate items
        assert lists.items.shape == (len(split_users), params.inference.top_k)
    metrics = json.loads((sid_root / "metrics" / f"train_{mode}.json").read_text())
    assert metrics["epochs_run"] >= 1
    # the best epoch's validation signals: the SID NLL is the sum of the per-position CEs
    ces = [metrics[f"best_valid_ce_{n}"] for n in ("s1", "s2", "s3", "dedup")]
    assert metrics["best_valid_sid_nll"] == pytest.approx(sum(ces), abs=1e-4) and min(ces) >= 0
    assert ("best_valid_cluster_acc_l1" in metrics) == (mode == "s2gr")
    evaluated = get_stage(f"evaluate_{mode}").run(params, sid_root)
    assert 0.0 <= evaluated.metrics["test.ndcg_at_10"] <= 1.0


def test_explain_prints_history_thoughts_and_titles_for_a_known_user(params: Params, sid_root: Path) -> None:
    from s2gr_core.models.gr.explain import explain
    from s2gr_core.models.gr.train import load_model

    get_stage("train_s2gr").run(params, sid_root)
    sem = load_semantic(sid_root / "data" / "sids", 40)
    model = load_model(sid_root / "models" / "s2gr" / "best.pt")
    _, histories, _ = load_eval(str(sid_root / "data" / "split" / "test.parquet"))
    result = explain(model, sem, histories[0], np.ones(40), beam=params.s2gr.beam, top_k=10)
    assert result.history == histories[0][-20:].tolist()
    assert [t.level for t in result.thoughts] == list(range(1, params.codebook.levels + 1))
    for t in result.thoughts:  # the examples really are items whose level-l code is in the cluster
        codes = sem.sids[t.examples, t.level - 1]
        assert all(int(sem.cluster_of_code[t.level - 1, c]) == t.cluster for c in codes)
    assert len(set(result.top)) == 10 and all(0 <= i < 40 for i in result.top)
    # in the model's own space the thoughts are read against cluster means of its code embeddings
    own = explain(model, sem, histories[0], np.ones(40), beam=params.s2gr.beam, top_k=10, space="input_codes")
    assert own.top == result.top and [t.level for t in own.thoughts] == [t.level for t in result.thoughts]
    assert all(-1.0 <= t.similarity <= 1.0 for t in own.thoughts)
