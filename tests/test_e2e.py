"""The whole pipeline in a temporary project: Prefect flow, dvc repro, MLflow, a bad data drop."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from s2gr_core.cores import available_cores
from s2gr_core.stages import STAGES as REGISTRY
from tests.conftest import BIN, REPO, apt_install, project_env

pytestmark = pytest.mark.e2e

STAGES = [s.name for s in REGISTRY]
EVALUATED = sorted(s.removeprefix("evaluate_") for s in STAGES if s.startswith("evaluate_"))


def run(cmd: list[str], root: Path, ok: bool = True, **env: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=root, env=project_env(root, **env), capture_output=True, text=True, timeout=600)
    if ok and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def mlflow_runs(root: Path) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("s2gr")
    return list(client.search_runs([exp.experiment_id], max_results=1000)) if exp else []


def children_of(runs: list, parent_id: str) -> dict[str, object]:
    return {r.data.tags["stage"]: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_id}


def digest(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def assert_inputs_are_dvc_versions(project: Path, kids: dict) -> None:
    """Each stage run lists what it read as MLflow dataset inputs, with the hash DVC locked for it as digest."""
    import yaml

    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    locked = {o["path"]: o["md5"] for s in lock.values() for o in s.get("outs", [])}
    for stage in ("split", "train_tiger", "evaluate_s2gr"):
        inputs = {d.dataset.name: d for d in kids[stage].inputs.dataset_inputs}
        deps = {d["path"] for d in lock[stage]["deps"]} & set(locked)  # data deps: another stage's outputs
        assert deps and set(inputs) == deps, (stage, sorted(inputs), sorted(deps))
        for name, d in inputs.items():
            assert d.dataset.digest == locked[name], (stage, name)
            assert d.tags[0].key == "mlflow.data.context" and d.tags[0].value
    assert locked["data/sids"].endswith(".dir")  # a folder's digest is DVC's listing hash


def assert_the_mlflow_ui_shows_the_runs(project: Path, pipeline_run: str) -> None:
    """The MLflow UI, rendered by headless Chromium (installed by this setup where missing), shows the pipeline
    run on the experiment's runs page and every model's test metrics on the run's page; screenshots in reports/."""
    sys.path.insert(0, str(REPO / "infra"))
    import ui_check

    apt_install("chromium", lambda: any(shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")))
    res = ui_check.check(f"sqlite:///{project / 'mlflow.db'}", project / "reports")
    assert res.run_names == [pipeline_run], res
    assert sorted(res.metrics_shown) == [f"evaluate_{m}/test.{k}_at_10" for m in EVALUATED for k in ("ndcg", "recall")]
    assert all(p.stat().st_size > 10_000 for p in res.screenshots)  # a rendered page, not an empty one


def test_pipeline_through_prefect_and_dvc(project: Path, data_dir: Path) -> None:
    # 1. The Prefect flow (ephemeral server) runs every stage via DVC, two independent ones at a time.
    flow = run([sys.executable, "-m", "flows.pipeline", "--jobs", "2"], project)
    assert f"stages run: {', '.join(STAGES)}" in flow.stdout + flow.stderr
    runs = mlflow_runs(project)
    assert_side_by_side_only_where_independent(project, runs)
    parents = [r for r in runs if r.data.tags.get("s2gr.kind") == "pipeline"]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.data.tags["s2gr.trigger"].startswith("prefect flow run")
    assert parent.data.tags["dataset"] == "ml-100k" and parent.info.status == "FINISHED"
    kids = children_of(runs, parent.info.run_id)
    assert sorted(kids) == sorted(STAGES)
    assert all(k.info.status == "FINISHED" for k in kids.values())
    assert kids["split"].data.metrics["users"] == 12
    assert kids["split"].data.params["split.max_history"] == "20"
    assert kids["validate"].data.tags["git_commit"]
    assert parent.data.metrics["split/interactions"] == 84
    artifacts = (project / "mlartifacts").rglob("validation.md")
    assert any("PASSED" in p.read_text() for p in artifacts)
    pages = list((project / "mlartifacts").rglob("validation.html"))
    assert pages and "PASSED" in pages[0].read_text()
    assert_inputs_are_dvc_versions(project, kids)
    # the parent names the data version the run validated
    ingested = yaml.safe_load((project / "dvc.lock").read_text())["stages"]["ingest"]["outs"]
    locked = {o["path"]: o["md5"] for o in ingested}
    assert {d.dataset.name: d.dataset.digest for d in parent.inputs.dataset_inputs} == locked
    assert_registered(project)
    assert_the_mlflow_ui_shows_the_runs(project, parent.info.run_name)

    # 2. An immediate dvc repro has nothing to do and logs nothing.
    lock = (project / "dvc.lock").read_text()
    again = run([str(BIN / "dvc"), "repro"], project)
    assert "Running stage" not in again.stdout
    assert "Data and pipelines are up to date" in again.stdout
    assert (project / "dvc.lock").read_text() == lock
    assert len(mlflow_runs(project)) == len(runs)
    assert_plots(project)
    assert_explains(project)

    # 3. A plain dvc repro groups its stage runs under one parent of its own. Two stages show it:
    # the flow above already ran every stage through DVC, and a full second run cost two minutes.
    again_stages = ["evaluate_sasrec", "report"]
    forced = run([str(BIN / "dvc"), "repro", "--force", "--single-item", *again_stages], project)
    assert forced.stdout.count("Running stage") == len(again_stages)
    runs = mlflow_runs(project)
    dvc_parents = [r for r in runs if r.data.tags.get("s2gr.group", "").startswith("dvc-")]
    assert len(dvc_parents) == 1
    assert sorted(children_of(runs, dvc_parents[0].info.run_id)) == sorted(again_stages)
    # both runs of SASRec had one configuration: one fingerprint, so the report may pool them
    configs = [r.data.tags["config"] for r in runs if r.data.tags.get("stage") == "evaluate_sasrec"]
    assert len(configs) == 2 and len(set(configs)) == 1 and len(configs[0]) == 12

    # 4. Reproducible byte for byte: the same seed and threads on the same machine, forced again, writes
    # the same split, embeddings, graph, SIDs and prediction lists (no timings or run ids inside data
    # outputs). The flow gave each stage half the cores (--jobs 2); float sums in
    # another thread count may differ in their last bits, so the rerun gets as many.
    rerun = ["split", "embed", "cooccur", "codebook", "sids", "train_sasrec"]
    share = str(max(1, available_cores() // 2))  # each stage's cores under the flow's --jobs 2
    outputs = ("data/split", "data/embed", "data/graph", "data/sids", "predictions/sasrec")
    first = {p: digest(p) for folder in outputs for p in sorted((project / folder).rglob("*")) if p.is_file()}
    run(
        [str(BIN / "dvc"), "repro", "--force", "--single-item", *rerun],
        project,
        S2GR_CORES=share,
        OMP_NUM_THREADS=share,
    )
    second = {p: digest(p) for folder in outputs for p in sorted((project / folder).rglob("*")) if p.is_file()}
    assert len(first) >= 10 and second == first

    # 5. A bad data drop: validation fails, split never runs, the last good processed tables and split stay.
    split_outputs = {p: digest(p) for p in (project / "data" / "split").glob("*.parquet")}
    split_outputs |= {p: digest(p) for p in (project / "data" / "processed").glob("*.parquet")}
    with open(data_dir / "ml-100k" / "ml-100k.inter", "a") as fh:
        fh.write("1\t999\t4\t880009999\n")
    run([str(BIN / "dvc"), "repro", "--force", "--single-item", "fetch"], project)
    bad = run([str(BIN / "dvc"), "repro"], project, ok=False)
    assert bad.returncode != 0
    assert "interactions.item_key: values must exist in items.item_key" in bad.stderr + bad.stdout
    assert "Running stage 'split'" not in bad.stdout and "Running stage 'train_sasrec'" not in bad.stdout
    assert {p: digest(p) for p in split_outputs} == split_outputs
    failed = [r for r in mlflow_runs(project) if r.data.tags.get("stage") == "validate" and r.info.status == "FAILED"]
    assert len(failed) == 1 and "values must exist" in failed[0].data.tags["error"]
    status = run([str(BIN / "dvc"), "status"], project)
    assert "validate:" in status.stdout  # still stale: the next good data drop re-runs it
    assert "split:" not in status.stdout  # what split reads is the last published (good) data

    # 6. The flow on the same bad drop: validate rejects it (exit 1, so no retry), what needs it never runs,
    # and the flow run fails saying so.
    flow = run([sys.executable, "-m", "flows.pipeline", "--until", "split", "--jobs", "2"], project, ok=False)
    assert flow.returncode == 1
    assert "stage(s) failed: validate; not run: split" in flow.stdout + flow.stderr
    assert {p: digest(p) for p in split_outputs} == split_outputs


def assert_side_by_side_only_where_independent(project: Path, runs: list) -> None:
    """Some stages overlapped in time, and none started before every stage it reads from had ended."""
    from tasks.dvc import stage_dag

    span = {r.data.tags["stage"]: (r.info.start_time, r.info.end_time) for r in runs if "stage" in r.data.tags}
    dag = stage_dag(project)
    assert all(span[up][1] <= span[stage][0] for stage, ups in dag.items() for up in ups)
    overlapping = {(a, b) for a in span for b in span if a < b and span[a][0] < span[b][1] and span[b][0] < span[a][1]}
    assert overlapping, "with --jobs 2 no two stages ran at the same time"


def assert_registered(project: Path) -> None:
    """The flow's promote stage registered every family (first models: promoted) and chose the served one."""
    from mlflow.tracking import MlflowClient

    promotion = json.loads((project / "reports/promotion.json").read_text())
    assert sorted(promotion["families"]) == ["s2gr", "sasrec", "tiger"]
    assert all(f["promote"] and f["reason"] == "no champion yet" for f in promotion["families"].values())
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    served = client.get_model_version_by_alias("s2gr-ml-100k", "champion")
    assert served.tags["source_version"] == promotion["serving"]["served_source"]
    assert served.tags["family"] in promotion["families"]
    for family, row in promotion["families"].items():  # each training run lists the model it produced
        trainer = client.get_run(row["training_run"])
        version = client.get_model_version(f"s2gr-ml-100k-{family}", "1")
        assert trainer.data.tags["stage"] == f"train_{family}"
        assert version.source.removeprefix("models:/") in {o.model_id for o in trainer.outputs.model_outputs}
    # the registered S2GR pyfunc gives the test lists the pipeline wrote, from histories of item keys
    import mlflow
    import numpy as np
    import pandas as pd

    from s2gr_core.split import load_eval

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model("models:/s2gr-ml-100k-s2gr@champion")
    keys = pd.read_parquet(project / "data/processed/items.parquet")["item_key"].astype(str).to_numpy()
    users, histories, _ = load_eval(str(project / "data/split/test.parquet"))
    got = model.predict(pd.DataFrame({"history": [keys[h].tolist() for h in histories]}), params={"k": 20})
    written = pd.read_parquet(project / "predictions/s2gr/test.parquet").sort_values(["user_id", "rank"])
    lists = written["item_id"].to_numpy().reshape(len(users), -1)[np.argsort(np.argsort(users))]
    assert np.array_equal(np.array(got["item_ids"].tolist()), lists)


def assert_explains(project: Path) -> None:
    """``s2gr explain`` reads both reasoning models back for a test user, SIDs followed by titles."""
    import pandas as pd

    test_user = int(pd.read_parquet(project / "data/split/test.parquet", columns=["user_id"])["user_id"].iloc[0])
    keys = pd.read_parquet(project / "data/processed/interactions.parquet", columns=["user_id", "user_key"])
    key = str(keys.loc[keys["user_id"] == test_user, "user_key"].iloc[0])
    for model in ("s2gr", "sidreasoner"):
        shown = run([str(BIN / "s2gr"), "explain", key, "--model", model], project).stdout
        assert "top-10" in shown and f"user {key}" in shown
    assert re.search(r"<a_\d+><b_\d+><c_\d+><d_\d+> \[[^]]+\]", shown)  # the prompt's history, titled
    missing = run([str(BIN / "s2gr"), "explain", "no-such-user", "--model", "sidreasoner"], project, ok=False)
    assert missing.returncode == 1 and "unknown user 'no-such-user'" in missing.stderr


def assert_plots(project: Path) -> None:
    """``dvc plots show`` finds data for every plot dvc.yaml declares: each trainer's curves, S2GR's loss
    terms and thought accuracy, the codebook's usage per level, the model comparison, the PNGs."""
    shown = run([str(BIN / "dvc"), "plots", "show", "--json"], project)
    plots = json.loads(shown.stdout)["data"]
    declared = yaml.safe_load((project / "dvc.yaml").read_text())["plots"]
    names = [entry if isinstance(entry, str) else next(iter(entry)) for entry in declared]
    assert sorted(plots) == sorted(names)

    def values(name: str) -> list[dict]:
        return plots[name][0]["content"]["data"]["values"]

    curves = values("Validation N@10 per epoch")
    assert {row["filename"] for row in curves} == {f"{m}/history.json" for m in ("sasrec", "tiger", "s2gr")}
    assert all(0 <= float(row["valid_ndcg_at_10"]) <= 1 for row in curves)
    sid_nll = values("SIDReasoner validation SID NLL per epoch (stage 1, stage 2)")
    assert {row["filename"] for row in sid_nll} == {f"sidreasoner_{p}/history.json" for p in ("align", "reason")}
    assert all(float(row["valid_sid_nll"]) > 0 for row in sid_nll)
    grpo = {row["field"] for row in values("SIDReasoner GRPO reward and share of valid SIDs per step (stage 3)")}
    assert grpo == {"reward", "reward_std", "valid_sid_share", "kl"}
    usage = {row["field"] for row in values("Codebook utilisation per level")}
    assert usage == {"utilisation_l1", "utilisation_l2", "utilisation_l3", "collision_rate"}
    assert {row["field"] for row in values("S2GR thought cluster accuracy per level")} == {
        f"valid_cluster_acc_l{level}" for level in (1, 2, 3)
    }
    assert sorted(row["model"] for row in values("Test N@10 per model")) == ["s2gr", "sasrec", "sidreasoner", "tiger"]
    assert plots["reports/models.png"][0]["type"] == "image"
