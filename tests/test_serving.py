"""The served recommender: bundles answer with the pipeline's own lists, bad requests are named, the pyfunc
round trip through MLflow, and the promotion gate (unit cases, then the promote stage on a real SQLite store)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from s2gr_core.config import params_from_dict
from s2gr_core.evaluation.gate import decide
from s2gr_core.serving.recommender import Recommender, Request, RequestError, first_unseen
from s2gr_core.split import load_eval
from tests.conftest import bundle, promote, repo_params

FAMILIES = ("sasrec", "tiger", "s2gr")


@pytest.mark.parametrize("family", FAMILIES)
def test_bundle_answers_with_the_pipelines_own_lists(family: str, trained, tmp_path: Path) -> None:
    root, params = trained
    rec = Recommender(bundle(root, params, family, tmp_path / "b"))
    users, histories, _ = load_eval(str(root / "data/split/test.parquet"))
    ranked = rec.recommend([Request(history_keys=tuple(rec.item_keys[h])) for h in histories], k=params.inference.top_k)
    pred = pd.read_parquet(root / f"predictions/{family}/test.parquet").sort_values(["user_id", "rank"])
    lists = pred["item_id"].to_numpy().reshape(len(users), -1)[np.argsort(np.argsort(users))]
    np.testing.assert_array_equal(np.array([r.item_ids for r in ranked]), lists)
    scores = pred["score"].to_numpy().reshape(len(users), -1)[np.argsort(np.argsort(users))]
    np.testing.assert_allclose(np.array([r.scores for r in ranked]), scores, atol=1e-4)
    assert ranked[0].item_keys == rec.item_keys[ranked[0].item_ids].tolist()
    assert ranked[0].titles == rec.titles[ranked[0].item_ids].tolist()
    # a known user is answered from the whole history the data holds (its test item included)
    inter = pd.read_parquet(root / "data/processed/interactions.parquet").sort_values("position")
    key = str(inter["user_key"].iloc[0])
    whole = inter.loc[inter["user_key"].astype(str) == key, "item_id"].to_numpy()
    by_user, by_ids = rec.recommend([Request(user=key), Request(history_ids=tuple(whole.tolist()))], k=5)
    assert by_user == by_ids and len(by_user.item_ids) == 5


@pytest.mark.parametrize("family", FAMILIES)
def test_exclude_history_drops_the_history_and_still_lists_k(family: str, trained, tmp_path: Path) -> None:
    root, params = trained
    rec = Recommender(bundle(root, params, family, tmp_path / "b"))
    _, histories, _ = load_eval(str(root / "data/split/test.parquet"))
    k = min(rec.max_k, 10)
    ranked = rec.recommend([Request(history_ids=tuple(h.tolist())) for h in histories], k=k, exclude_history=True)
    for r, h in zip(ranked, histories, strict=True):
        assert len(r.item_ids) == k == len(set(r.item_ids))
        assert not set(r.item_ids) & set(h[-params.split.max_history :].tolist())


def test_first_unseen_keeps_order_and_skips_history_items() -> None:
    items = np.array([[5, 7, 9, 2], [1, 2, 3, 4]])
    keep = first_unseen(items, [np.array([7, 1]), np.array([1, 2, 3])], 1)
    assert np.take_along_axis(items, keep, 1).tolist() == [[5], [4]]


BAD = [
    ([], {}, "the batch holds no requests"),
    (
        [Request(history_keys=("nope", "zzz"))],
        {},
        r"request 0: history holds 2 unknown item key\(s\): \['nope', 'zzz'\]",
    ),
    ([Request(history_keys=())], {}, "request 0: history is empty"),
    ([Request(history_ids=())], {}, "request 0: item_ids is empty"),
    ([Request(history_ids=(0, 99999))], {}, r"request 0: item_ids outside 0\.\.39: \[99999\]"),
    ([Request(user="no-such-user")], {}, "request 0: unknown user 'no-such-user'"),
    ([Request(user="1", history_ids=(1,))], {}, "request 0: give exactly one of user, history, item_ids"),
    ([Request()], {}, r"request 0: give exactly one .* \(got none\)"),
    ([Request(history_ids=(1,))], {"k": 0}, "k=0: must be an integer from 1"),
    ([Request(history_ids=(1,))], {"k": 41}, "k=41: must be an integer from 1 to 40"),
    ([Request(history_ids=(1,))], {"k": "5"}, "k='5': must be an integer"),
    ([Request(history_ids=(1,))] * 257, {}, "the batch holds 257 requests; at most 256 per call"),
]


@pytest.mark.parametrize(("requests", "kwargs", "match"), BAD, ids=[m[:30] for _, _, m in BAD])
def test_bad_requests_name_the_request_field_and_value(requests, kwargs, match: str, trained, tmp_path: Path) -> None:
    root, params = trained
    rec = Recommender(bundle(root, params, "sasrec", tmp_path / "b"))
    with pytest.raises(RequestError, match=match):
        rec.recommend(requests, **kwargs)


def test_sid_models_refuse_k_above_their_beam(trained, tmp_path: Path) -> None:
    root, params = trained
    rec = Recommender(bundle(root, params, "tiger", tmp_path / "b"))
    with pytest.raises(RequestError, match=f"k=21: must be an integer from 1 to {params.tiger.beam} \\(tiger's beam"):
        rec.recommend([Request(history_ids=(1,))], k=21)


def test_pyfunc_round_trip_through_a_real_mlflow_store(trained, tmp_path: Path, monkeypatch) -> None:
    import mlflow

    from s2gr.registry import log_recommender

    root, params = trained
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    b = bundle(root, params, "s2gr", tmp_path / "b")
    mlf = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = mlf.create_run(mlf.create_experiment("t", artifact_location=(tmp_path / "art").as_uri()))
    uri = log_recommender(tmp_path, run.info.run_id, b, "s2gr")
    model = mlflow.pyfunc.load_model(uri)
    sig = model.metadata.signature
    assert {p.name: p.default for p in sig.params.params} == {"k": 10, "exclude_history": False}
    assert sig.inputs.input_names() == ["user", "history", "item_ids"]
    assert model.metadata.saved_input_example_info is not None  # logged with an input example
    rec = Recommender(b)
    keys, user = rec.item_keys[[3, 7]].tolist(), next(iter(rec.user_row))
    frame = pd.DataFrame({"user": [None, user], "history": [keys, None], "item_ids": [None, None]})
    got = model.predict(frame, params={"k": 4})
    want = rec.recommend([Request(history_keys=tuple(keys)), Request(user=user)], k=4)
    assert got["item_ids"].tolist() == [w.item_ids for w in want]
    assert got["titles"].tolist() == [w.titles for w in want]
    with pytest.raises(mlflow.exceptions.MlflowException, match="unknown item key"):
        model.predict(pd.DataFrame({"history": [["nope"]]}))


def per_user(values: list[float], split: str = "valid") -> pd.DataFrame:
    return pd.DataFrame({"user_id": range(len(values)), "split": split, "ndcg_at_10": values})


RULE = params_from_dict(repo_params()).registry


def test_gate_promotes_the_first_model() -> None:
    d = decide(per_user([0.1, 0.0]), None, RULE)
    assert d.promote and d.reason == "no champion yet" and d.old is None


def test_gate_promotes_a_significantly_better_challenger() -> None:
    rng = np.random.default_rng(0)
    old = rng.uniform(0, 0.3, 200)
    d = decide(per_user(list(old + 0.05)), per_user(list(old)), RULE)
    assert d.promote and d.delta == pytest.approx(0.05) and d.ci_low > 0 and "excludes 0" in d.reason


@pytest.mark.parametrize(
    ("shift", "rule", "match"),
    [
        (-0.05, RULE, "is below the required"),
        (0.0, replace(RULE, min_improvement=-1.0), "is not significant"),
        (0.01, replace(RULE, min_improvement=0.02), r"\+0\.0100 is below the required \+0\.0200"),
    ],
)
def test_gate_keeps_the_champion_against_a_worse_or_insignificant_challenger(shift, rule, match) -> None:
    rng = np.random.default_rng(1)
    old = rng.uniform(0, 0.3, 200)
    new = old + shift + (rng.normal(0, 0.2, 200) if shift == 0.0 else 0.0)
    d = decide(per_user(list(new)), per_user(list(old)), rule)
    assert not d.promote
    assert d.reason.startswith("ndcg_at_10") and pd.Series([d.reason]).str.contains(match).all()


def test_gate_refuses_results_of_different_users() -> None:
    with pytest.raises(ValueError, match="scored different users"):
        decide(per_user([0.1, 0.2, 0.3]), per_user([0.1, 0.2]), RULE)


def assert_logged_in_runs_of_their_own(mlf, root: Path, promotion: dict) -> None:
    """Each family's model lives in a promote/<family> run nested in the promote run, with its validation
    means as the logged model's metrics; this store holds no training runs, so none is linked."""
    for family, row in promotion["families"].items():
        version = mlf.get_model_version(f"s2gr-ml-100k-{family}", "1")
        model = mlf.get_logged_model(version.source.removeprefix("models:/"))
        run = mlf.get_run(model.source_run_id)
        assert run.info.run_name == f"promote/{family}" and run.info.status == "FINISHED"
        assert mlf.get_run(run.data.tags["mlflow.parentRunId"]).info.run_name == "promote"
        results = pd.read_parquet(root / f"reports/eval/{family}_per_user.parquet").query("split == 'valid'")
        metrics = {m.key: m.value for m in model.metrics}
        assert metrics["valid_ndcg_at_10"] == pytest.approx(results["ndcg_at_10"].mean())
        assert row["training_run"] is None


def test_promote_stage_first_better_and_worse_against_a_real_sqlite_store(trained, monkeypatch) -> None:
    """Three pipeline runs: every family's first model is promoted; an S2GR whose validation N@10 is higher for
    every user replaces its champion and becomes the served model; the original S2GR back is refused."""

    from mlflow import MlflowClient

    from s2gr_core.io import write_parquet

    root, params = trained
    uri = f"sqlite:///{root / 'gate.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)

    results = root / "reports/eval/s2gr_per_user.parquet"
    original = pd.read_parquet(results)
    try:
        first = promote(root, params)
        assert all(f["promote"] and f["reason"] == "no champion yet" for f in first["families"].values())
        assert_logged_in_runs_of_their_own(MlflowClient(tracking_uri=uri), root, first)
        assert first["serving"]["promote"] and first["serving"]["model"] == "s2gr-ml-100k"

        better = original.copy()
        better.loc[better["split"] == "valid", "ndcg_at_10"] += 0.5
        write_parquet(better, results)
        second = promote(root, params)
        s2gr = second["families"]["s2gr"]
        assert (
            s2gr["promote"] and s2gr["delta"] == pytest.approx(0.5) and s2gr["champion_before"] == "s2gr-ml-100k-s2gr/1"
        )
        tiger = second["families"]["tiger"]  # the same model and results: not registered again
        assert (
            not tiger["promote"] and tiger["reason"] == "unchanged: s2gr-ml-100k-tiger/1 has these weights and results"
        )
        assert second["serving"]["promote"] and second["serving"]["champion_after"] == "s2gr-ml-100k/2"

        write_parquet(original, results)
        third = promote(root, params)
        s2gr = third["families"]["s2gr"]
        assert not s2gr["promote"] and s2gr["delta"] == pytest.approx(-0.5) and "below the required" in s2gr["reason"]
        assert not third["serving"]["promote"] and "already served" in third["serving"]["reason"]

        # a champion evaluated on another data version is re-scored through its own pyfunc: TIGER's own
        # lists again, so exactly the evaluate stage's results (a delta of 0, not significant)
        MlflowClient(tracking_uri=uri).set_model_version_tag("s2gr-ml-100k-tiger", "1", "data_version", "0" * 32)
        tiger = promote(root, params)["families"]["tiger"]
        assert any("s2gr-ml-100k-tiger/1 re-scored on data" in n for n in tiger["notes"]), tiger
        assert tiger["delta"] == 0.0 and not tiger["promote"] and tiger["challenger"] == "s2gr-ml-100k-tiger/2"
    finally:
        write_parquet(original, results)

    mlf = MlflowClient(tracking_uri=uri)
    champion = mlf.get_model_version_by_alias("s2gr-ml-100k-s2gr", "champion")
    challenger = mlf.get_model_version_by_alias("s2gr-ml-100k-s2gr", "challenger")
    assert (int(champion.version), int(challenger.version)) == (2, 4)  # runs 3 and 4 each registered a challenger
    tags = {"data_version", "git_commit", "s2gr.run_id", "per_user_results", "model_uri", "content_md5"}
    assert tags <= set(champion.tags)
    served = mlf.get_model_version_by_alias("s2gr-ml-100k", "champion")
    assert served.tags["source_version"] == "s2gr-ml-100k-s2gr/2"
    assert "| s2gr-ml-100k-s2gr |" in (root / "reports/promotion.md").read_text()
