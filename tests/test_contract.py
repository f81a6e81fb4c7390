"""dvc.yaml (the only DAG) and the stage registry must agree exactly."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
import yaml

from s2gr_core.stages import STAGES
from tests.conftest import REPO

DVC = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def _paths(entries: list) -> dict[str, dict]:
    """dvc.yaml dep/out entries (a path, or {path: {options}}) -> {path: options}."""
    out: dict[str, dict] = {}
    for entry in entries or []:
        if isinstance(entry, str):
            out[entry] = {}
        else:
            ((path, opts),) = entry.items()
            out[path] = opts or {}
    return out


def test_same_stages_in_the_same_order() -> None:
    assert list(DVC) == [s.name for s in STAGES]


@pytest.mark.parametrize("stage", STAGES, ids=lambda s: s.name)
def test_stage_agrees_with_dvc_yaml(stage) -> None:
    entry = DVC[stage.name]
    assert entry["cmd"] == f"s2gr stage {stage.name}"
    assert set(_paths(entry.get("deps"))) == set(stage.deps.values()) | set(stage.code)
    assert set(entry.get("params", [])) == set(stage.params)
    outs = _paths(entry.get("outs"))
    metrics = _paths(entry.get("metrics"))
    assert set(outs) == set(stage.outs.values())
    assert set(metrics) == set(stage.metrics.values())
    # a stage that rejects its input must not find its last good outputs deleted by DVC
    assert all(opts.get("persist") is True for opts in [*outs.values(), *metrics.values()])


@pytest.mark.parametrize("stage", STAGES, ids=lambda s: s.name)
def test_stage_function_takes_exactly_its_declared_paths(stage) -> None:
    params = inspect.signature(stage.function).parameters.values()
    # bound options (e.g. model="sasrec" via functools.partial) and the reporter are not paths
    names = {p.name for p in params if p.default is inspect.Parameter.empty and p.kind == p.KEYWORD_ONLY}
    names.discard("reporter")
    declared = set(stage.deps) | set(stage.outs) | set(stage.metrics) | set(stage.scratch)
    if any(p.kind == p.VAR_KEYWORD for p in params):  # e.g. report(**evaluations)
        assert names <= declared
    else:
        assert names == declared


def test_code_deps_exist_and_data_deps_are_produced_upstream() -> None:
    produced: set[str] = set()
    for stage in STAGES:
        for path in stage.code:
            assert (REPO / path).exists(), f"{stage.name}: code dep {path} does not exist"
        for path in stage.deps.values():
            assert path in produced, f"{stage.name}: {path} is not produced by an earlier stage"
        produced |= set(stage.outs.values()) | set(stage.metrics.values())


def test_core_library_is_pure() -> None:
    """s2gr_core must not import Prefect, MLflow or DVC."""
    banned = {"prefect", "mlflow", "dvc"}
    for path in (REPO / "s2gr_core").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in banned, f"{path.relative_to(REPO)} imports {name}"


def test_params_used_by_stages_exist() -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for stage in STAGES:
        for dotted in stage.params:
            node = params
            for part in dotted.split("."):
                assert part in node, f"{stage.name}: params.yaml has no {dotted}"
                node = node[part]


def test_outputs_are_git_ignored() -> None:
    ignored = (REPO / ".gitignore").read_text().split()
    for stage in STAGES:
        for path in [*stage.outs.values(), *stage.metrics.values()]:
            top = "/" + Path(path).parts[0] + "/"
            assert top in ignored, f"{path} must be git-ignored (DVC tracks it)"


def test_flow_order_is_dvcs_topological_order_and_until_keeps_the_ancestors(project: Path) -> None:
    from tasks.dvc import stage_dag, stage_order

    everything = stage_order(project)
    assert everything == [s.name for s in STAGES]  # dvc.yaml's own order, which is a valid run order
    position = {name: i for i, name in enumerate(everything)}
    dag = stage_dag(project)  # what the flow waits for before it starts a stage
    assert list(dag) == everything
    for stage in STAGES:  # every producer runs before its consumers, and a consumer waits for exactly them
        producers = {
            s.name for dep in stage.deps.values() for s in STAGES if dep in s.outs.values() or dep in s.metrics.values()
        }
        assert all(position[p] < position[stage.name] for p in producers)
        assert set(dag[stage.name]) == producers, stage.name
    semantic = stage_order(project, until="sids")
    assert semantic[-1] == "sids"
    assert set(semantic) == {"fetch", "ingest", "validate", "split", "embed", "cooccur", "codebook", "sids"}
    with pytest.raises(ValueError, match=r"unknown stage .nope.; dvc\.yaml has: fetch"):
        stage_order(project, until="nope")


# Stages that must start without torch (each stage is its own process under DVC: torch costs 2.3 s of it)
TORCH_FREE = ("fetch", "ingest", "validate", "split", "evaluate_sasrec", "report")
IMPORT_PROBE = """
import sys
from s2gr.cli import build_parser
from s2gr_core.stages import get_stage
heavy = ("torch", "pandas", "great_expectations", "mlflow")
build_parser()
print(*[m for m in heavy if m in sys.modules], sep=",")
for name in sys.argv[1].split(","):
    get_stage(name).function
print("torch" in sys.modules)
get_stage("train_tiger").function
print("torch" in sys.modules)
"""


def test_the_cli_and_registry_import_no_stage_code_until_a_stage_runs() -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", IMPORT_PROBE, ",".join(TORCH_FREE)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split("\n")[:3] == ["", "False", "True"]


def test_every_deployment_runs_a_flow_that_exists_on_a_declared_pool() -> None:
    """prefect.yaml: each entrypoint names a flow function in the project; `make deploy` deploys the process
    pools' deployments by name, and the container ones differ only in their pool."""
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    deployments = {d["name"]: d for d in spec["deployments"]}
    for name, deployment in deployments.items():
        path, function = deployment["entrypoint"].split(":")
        source = (REPO / path).read_text()
        assert f"def {function}(" in source and "@flow(" in source, name
    makefile = (REPO / "Makefile").read_text()
    assert "deploy --name weekly-retrain --name bench-run" in makefile
    for base in ("weekly-retrain", "bench-run"):
        for flavour, pool in (("docker", "s2gr-docker"), ("k8s", "s2gr-k8s")):
            container = deployments[f"{base}-{flavour}"]
            assert container["entrypoint"] == deployments[base]["entrypoint"]
            assert container["work_pool"]["name"] == pool and container["work_pool"]["job_variables"]["image"]
