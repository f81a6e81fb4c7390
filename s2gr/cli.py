"""``s2gr``: the one command line of the project (DVC stages call ``s2gr stage NAME``)."""

from __future__ import annotations

import argparse
import contextlib
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from s2gr import env

EXIT_REJECTED = 1  # the stage rejected its input (bad data / config): last good outputs kept
EXIT_USAGE = 2
EXIT_ERROR = 3  # an unexpected failure (possibly transient)

EPILOG = """\
start here (from the project folder):
  make run                    the whole pipeline on ml-100k, then the model table (README.md)

examples:
  s2gr stages                 list the pipeline stages with their inputs and outputs
  s2gr stage split            run one stage (what every dvc.yaml cmd does), logged to MLflow
  s2gr params                 every parameter of params.yaml with its meaning
  s2gr report                 test metrics of every model (mean ± std over seeds), from MLflow
  s2gr compare A B            paired deltas with 95% CIs between two evaluate runs
  s2gr serve                  serve the registered champion on http://127.0.0.1:5001
  dvc repro                   run the whole pipeline; only stale stages re-run
  dvc exp run -S data.name=amazon-beauty
                              the same pipeline on Amazon Beauty, as a DVC experiment

environment:
  S2GR_DATA_DIR               folder with local dataset copies (overrides data.source_dir)
  MLFLOW_TRACKING_URI         MLflow store (default: sqlite:///<project>/mlflow.db)
  S2GR_MLFLOW_PARENT_RUN_ID   nest stage runs under this MLflow run (set by the Prefect flow)
  S2GR_TRACKING=off           run stages without MLflow logging
  RANK, WORLD_SIZE, ...       set by torchrun: a train stage runs as one data-parallel rank (rank 0 logs)
"""


def _stage_table() -> str:
    from s2gr_core.stages import STAGES

    lines = []
    for s in STAGES:
        lines.append(f"  {s.name:<10} {s.help}")
        for label, paths in (("in ", list(s.deps.values())), ("out", [*s.outs.values(), *s.metrics.values()])):
            if paths:
                lines.append(f"  {'':<10}   {label}: {', '.join(paths)}")
    return "\n".join(lines)


def cmd_stages(_: argparse.Namespace) -> int:
    print("Pipeline stages, in DAG order (dvc.yaml runs each as `s2gr stage NAME`):\n")
    print(_stage_table())
    return 0


def cmd_params(_: argparse.Namespace) -> int:
    from s2gr_core.config import GR_MODES, SHARED, ConfigError, describe, load_params
    from s2gr_core.stages.lineage import param_value

    root = env.find_root()
    try:
        params = load_params(root / "params.yaml")
    except ConfigError as exc:  # the same clean message a stage prints, naming the key and value
        print(f"s2gr: error: {exc.args[0]}", file=sys.stderr)
        return EXIT_USAGE
    for key, help_text in describe():
        section, _, name = key.partition(".")
        if section == SHARED:  # what each model uses: the shared value, or each model's own
            used = {mode: getattr(getattr(params, mode), name) for mode in GR_MODES}
            same = len({repr(v) for v in used.values()}) == 1
            value = repr(used[GR_MODES[0]]) if same else ", ".join(f"{m}: {v!r}" for m, v in used.items())
            print(f"{key} = {value}")
        else:
            print(f"{key} = {param_value(params, key)!r}")
        print(textwrap.indent(textwrap.fill(help_text, 90), "    "))
    return 0


def _record_failure(run: Any, error: str, artifacts: list[Path]) -> None:
    """Mark the stage's MLflow run failed; a tracking fault here must not hide the stage's own error."""
    try:
        run.set_tags({"error": error})
        run.log_artifacts(artifacts)
        run.close(ok=False)
    except Exception as exc:
        print(
            f"[{run.stage}] warning: could not record the failure in MLflow: {type(exc).__name__}: {exc}",
            file=sys.stderr,
        )


def cmd_stage(args: argparse.Namespace) -> int:
    import os

    from s2gr_core.config import ConfigError, load_params
    from s2gr_core.stages import StageFailed, get_stage

    root = env.find_root()
    env.configure(root)
    try:
        stage = get_stage(args.name)
        params = load_params(root / "params.yaml")
    except (KeyError, ConfigError) as exc:
        print(f"s2gr: error: {exc.args[0]}", file=sys.stderr)
        return EXIT_USAGE
    os.chdir(root)
    rank = int(os.environ.get("RANK", "0"))  # set by torchrun: rank 0 alone logs and publishes
    if stage.distributed and params.distributed.world_size > 1 and "WORLD_SIZE" not in os.environ:
        return torchrun(stage.name, params.distributed.world_size, args.no_track)
    if rank != 0 and not stage.distributed:  # launched by torchrun, but only a train stage has work for a rank
        print(f"[{stage.name}] rank {rank}: not a data-parallel stage; rank 0 runs it alone", flush=True)
        return 0
    track = os.environ.get("S2GR_TRACKING", "on").lower() not in ("off", "0", "false") and not args.no_track
    track = track and rank == 0
    run = None
    if track:
        from s2gr.tracking import StageRun, check_tracking, tracking_uri
        from s2gr_core.stages.lineage import param_value

        logged = {key: param_value(params, key) for key in stage.params}
        try:
            check_tracking(root)
            run = StageRun(root, stage.name, logged, params.tracking.experiment, params.data.name)
            run.log_inputs({name: root / path for name, path in stage.deps.items()})
        except Exception as exc:  # nothing has run yet: a transient fault, worth a retry (exit 3)
            print(
                f"[{stage.name}] FAILED before it started: MLflow tracking ({tracking_uri(root)}): {exc}",
                file=sys.stderr,
            )
            return EXIT_ERROR
    started = time.time()
    if rank == 0:
        print(f"[{stage.name}] {stage.help}", flush=True)
    try:
        result = stage.run(params, root, reporter=run)
    except StageFailed as exc:
        print(f"[{stage.name}] FAILED: {exc}", file=sys.stderr)
        if run is not None:
            _record_failure(run, str(exc), exc.artifacts)
        return EXIT_REJECTED
    except Exception as exc:
        # Bad input raises typed errors (DataFormatError, ValueError) whose message names the
        # file and line: show that, not a traceback (S2GR_DEBUG=1 shows it). Exit 1 = input
        # rejected (retrying cannot help); 3 = anything else (the flow may retry it).
        print(f"[{stage.name}] FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
        if run is not None:
            _record_failure(run, f"{type(exc).__name__}: {exc}", [])
        if os.environ.get("S2GR_DEBUG"):
            raise
        return EXIT_REJECTED if isinstance(exc, ValueError) else EXIT_ERROR
    elapsed = time.time() - started
    if rank != 0:
        # A data-parallel rank that trained is done (rank 0 publishes). Its interpreter's teardown took
        # a few CPU-seconds from rank 0's decoding (1,586 users/s against 2,711 without it): leave now.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    if run is not None:
        try:
            if result.tags:
                run.set_tags(result.tags)
            run.log_summary(result.metrics)
            run.log_artifacts(result.artifacts + [root / p for p in stage.metrics.values()])
            run.close(ok=True)
        except Exception as exc:  # the stage's outputs are good: keep them, say what was not logged
            print(f"[{stage.name}] warning: MLflow logging incomplete: {type(exc).__name__}: {exc}", file=sys.stderr)
            with contextlib.suppress(Exception):
                run.set_tags({"tracking_error": f"{type(exc).__name__}: {exc}"})
                run.close(ok=True)
    where = f"; MLflow run {run.run_id} (parent {run.parent.run_id})" if run is not None else ""
    if rank == 0:
        print(f"[{stage.name}] done in {elapsed:.1f}s: {result.summary}{where}", flush=True)
    return 0


def torchrun(stage: str, processes: int, no_track: bool) -> int:
    """``s2gr stage NAME`` as ``processes`` data-parallel ranks on this machine, launched by torchrun
    (its standalone rendezvous on loopback). The exit status is the failed rank's (rank 0's first),
    with a signal ``-N`` as ``128 + N``, so a rejected input still exits 1 and a crash 3."""
    import os
    import tempfile

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    from s2gr_core.models.distributed import core_share

    # each rank's share of the cores (torchrun would otherwise set 1 and warn)
    os.environ.setdefault("OMP_NUM_THREADS", str(core_share(processes)))
    print(f"[{stage}] torchrun: {processes} data-parallel processes (distributed.world_size)", flush=True)
    with tempfile.TemporaryDirectory(prefix="s2gr-torchrun-") as logs:  # its error files, gone afterwards
        argv = ["--standalone", f"--nproc-per-node={processes}", "--log-dir", logs]
        try:
            run(parse_args([*argv, "--module", "s2gr.cli", "stage", stage, *(["--no-track"] if no_track else [])]))
        except ChildFailedError as exc:
            failure = exc.failures.get(0) or exc.get_first_failure()[1]
            return 128 - failure.exitcode if failure.exitcode < 0 else failure.exitcode
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    import tempfile

    from s2gr.tracking import per_user_results
    from s2gr_core.evaluation.compare import compare, format_deltas, read_per_user

    root = env.find_root()
    env.configure(root)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            (path_a, name_a), (path_b, name_b) = (
                per_user_results(root, ref, Path(tmp) / label) for ref, label in ((args.a, "a"), (args.b, "b"))
            )
            deltas = compare(
                read_per_user(path_a),
                read_per_user(path_b),
                args.metrics,
                args.split,
                n_boot=args.boot,
                seed=args.seed,
            )
        except ValueError as exc:
            print(f"s2gr compare: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
    print(f"split: {args.split}; {args.boot:,} paired bootstrap resamples of users")
    print(format_deltas(deltas, name_a, name_b))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from s2gr.tracking import StageRun, client, evaluation_history, experiment_id
    from s2gr_core.config import load_params
    from s2gr_core.evaluation.report import write_report

    root = env.find_root()
    env.configure(root)
    params = load_params(root / "params.yaml")
    dataset = args.dataset or params.data.name
    mlf = client(root)
    records = evaluation_history(mlf, experiment_id(mlf, params.tracking.experiment, root), dataset)
    out = (root / args.out) if not Path(args.out).is_absolute() else Path(args.out)
    files = [out / "models.md", out / "models.csv", out / "models.png"]
    try:
        _, markdown = write_report(records, dataset, *files)
    except ValueError as exc:
        print(f"s2gr report: {exc}; run the pipeline first (dvc repro)", file=sys.stderr)
        return 1
    print(markdown)
    print(f"written: {', '.join(str(f.relative_to(root)) if f.is_relative_to(root) else str(f) for f in files)}")
    if not args.no_track:
        run = StageRun(root, "report-cli", {"dataset": dataset}, params.tracking.experiment, dataset)
        run.log_artifacts(files)
        run.close(ok=True)
        print(f"logged to MLflow run {run.run_id}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    import numpy as np
    import pandas as pd

    from s2gr_core.config import load_params
    from s2gr_core.split import load_eval

    root = env.find_root()
    params = load_params(root / "params.yaml")
    model_dir = root / "models" / ("s2gr" if args.model == "s2gr" else f"sidreasoner_{args.phase}")
    stage = "train_s2gr" if args.model == "s2gr" else f"train_sidreasoner_{args.phase}"
    if not (model_dir / "best.pt" if args.model == "s2gr" else model_dir).exists():
        print(f"s2gr explain: {model_dir} not found; train the model first (dvc repro {stage})", file=sys.stderr)
        return 1
    items = pd.read_parquet(root / "data" / "processed" / "items.parquet").sort_values("item_id")
    users, histories, _ = load_eval(str(root / "data" / "split" / "test.parquet"))
    keys = pd.read_parquet(root / "data" / "processed" / "interactions.parquet", columns=["user_id", "user_key"])
    lookup = dict(zip(keys["user_key"].astype(str), keys["user_id"], strict=False))
    user_id = lookup.get(str(args.user))
    if user_id is None or user_id not in set(users.tolist()):
        print(f"s2gr explain: unknown user {args.user!r} (give the dataset's own user key)", file=sys.stderr)
        return 1
    history = histories[int(np.flatnonzero(users == user_id)[0])]
    explain = _explain_s2gr if args.model == "s2gr" else _explain_sidreasoner
    return explain(args, root, model_dir, params, items, history)


def _explain_s2gr(args: argparse.Namespace, root: Path, model_dir: Path, params, items, history) -> int:
    import numpy as np

    from s2gr_core.io import load_torch
    from s2gr_core.models.gr.explain import explain
    from s2gr_core.models.gr.train import load_model
    from s2gr_core.split import load_train
    from s2gr_core.stages.generative import load_semantic

    best = model_dir / "best.pt"
    _, sequences = load_train(str(root / "data" / "split" / "train.parquet"))
    popularity = np.bincount(np.concatenate(sequences), minlength=len(items))
    sem = load_semantic(root / "data" / "sids", len(items))
    model = load_model(best)
    space = str(load_torch(best)["config"].get("align_space", "projection"))  # as the model was trained
    result = explain(model, sem, history, popularity, params.s2gr.beam, top_k=10, space=space)
    title = items["title"].fillna("(no title)").tolist()
    print(f"user {args.user} — history (oldest first, test split):")
    for item in result.history:
        print(f"  - {title[item]}")
    print(f"thinking, level by level (nearest code cluster of each thinking vector, {space} space):")
    for t in result.thoughts:
        shown = "; ".join(title[i] for i in t.examples)
        print(f"  t{t.level}: cluster {t.cluster} (cos {t.similarity:.2f}), e.g. {shown}")
    print("top-10:")
    for rank, item in enumerate(result.top, 1):
        print(f"  {rank:2d}. {title[item]}")
    return 0


def _explain_sidreasoner(args: argparse.Namespace, root: Path, model_dir: Path, params, items, history) -> int:
    from transformers import AutoTokenizer

    from s2gr_core.models.gr.beam import DecodingTables
    from s2gr_core.models.runtime import runtime_for
    from s2gr_core.models.sidreasoner.explain import explain_user
    from s2gr_core.models.sidreasoner.model import load_lm
    from s2gr_core.models.sidreasoner.tokenizer import code_token_ids
    from s2gr_core.models.sidreasoner.tokens import sid_tokens
    from s2gr_core.stages.sidreasoner import catalogue

    cfg = params.sidreasoner
    mode = args.mode or cfg.infer.mode
    cat, trie = catalogue(params, root / "data" / "processed" / "items.parquet", root / "data" / "sids")
    runtime = runtime_for(cfg.device, cfg.threads, cfg.precision, False)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    result = explain_user(
        load_lm(model_dir, runtime.device),
        tokenizer,
        cat,
        history[-cfg.corpus.history :].tolist(),
        code_token_ids(tokenizer, sid_tokens(trie.vocab)),
        DecodingTables.from_numpy(trie.children),
        runtime,
        think_tokens=cfg.infer.max_think_tokens if mode == "thinking" else 0,
        beam=cfg.infer.beam,
        top_k=10,
    )
    print(f"user {args.user}, SIDReasoner after {args.phase}, {mode} mode — the prompt (SIDs titled):")
    print(textwrap.indent(result.prompt.strip(), "  "))
    if mode == "thinking":
        print("reasoning trace (greedy, cut at </think>; SIDs titled):")
        print(textwrap.indent(result.trace or "(empty)", "  "))
    print("top-10 (constrained beam; SID log-probability):")
    for rank, (item, score) in enumerate(zip(result.top, result.scores, strict=True), 1):
        print(f"  {rank:2d}. {cat.sid[item]} {cat.title[item]}  ({score:.2f})")
    return 0


def serve_command(model_uri: str, host: str, port: int, workers: int = 1) -> list[str]:
    """The ``mlflow models serve`` command line of :func:`cmd_serve` (the project's environment, no new one)."""
    return [
        str(Path(sys.executable).with_name("mlflow")),
        "models",
        "serve",
        "-m",
        model_uri,
        "--env-manager",
        "local",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]


def cmd_serve(args: argparse.Namespace) -> int:
    import os

    from s2gr.registry import alias_version, family_model, serving_model
    from s2gr.tracking import client, tracking_uri
    from s2gr_core.config import load_params

    root = env.find_root()
    env.configure(root)
    params = load_params(root / "params.yaml")
    uri = args.model_uri
    if uri is None:
        name = family_model(params, args.family) if args.family else serving_model(params)
        if alias_version(client(root), name, args.alias) is None:
            print(
                f"s2gr serve: no model {name}@{args.alias} in {tracking_uri(root)}; run the pipeline (dvc repro) so "
                "the promote stage registers one",
                file=sys.stderr,
            )
            return 1
        uri = f"models:/{name}@{args.alias}"
    host, port = args.host or params.serve.host, args.port or params.serve.port
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"s2gr serve: listening on {host}: reachable from other machines", file=sys.stderr)
    command = serve_command(uri, host, port, args.workers)
    print(f"serving {uri} on http://{host}:{port} (POST /invocations, GET /ping); Ctrl-C stops", flush=True)
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri(root)
    # MLflow starts `uvicorn` by name: this environment's, also when its bin folder is not on PATH
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    os.execv(command[0], command)  # the server replaces this process: signals reach it directly
    return 0  # pragma: no cover


DATA_DROP_EVENT = "s2gr.data.dropped"  # prefect.yaml's trigger on weekly-retrain expects it


def cmd_data_drop(args: argparse.Namespace) -> int:
    import os

    from s2gr_core.config import data_source_dir, load_params

    root = env.find_root()
    env.configure(root)
    data = load_params(root / "params.yaml").data
    dataset = args.dataset or data.name
    if not os.environ.get("PREFECT_API_URL"):
        print(
            's2gr data-drop: no Prefect server: set PREFECT_API_URL (`eval "$(infra/local-servers.sh env)"`) '
            "to the server where `make deploy` registered weekly-retrain",
            file=sys.stderr,
        )
        return EXIT_USAGE
    from prefect.events import emit_event
    from prefect.events.worker import EventsWorker

    source = data_source_dir(data)
    event = emit_event(
        event=DATA_DROP_EVENT,
        resource={"prefect.resource.id": f"s2gr.dataset.{dataset}", "prefect.resource.name": dataset},
        payload={"source_dir": str(source) if source else None, "note": args.note or ""},
    )
    EventsWorker.drain_all(timeout=30)  # the event goes out on a background worker: send it before exiting
    if event is None:
        print("s2gr data-drop: Prefect sent no event (are events disabled in its settings?)", file=sys.stderr)
        return EXIT_ERROR
    print(f"emitted {DATA_DROP_EVENT} for {dataset} (event {event.id}) to {os.environ['PREFECT_API_URL']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from s2gr_core.stages import STAGES

    parser = argparse.ArgumentParser(
        prog="s2gr",
        description="S2GR: reasoning-enhanced generative recommendation as a reproducible pipeline "
        "(DVC stages, Prefect flows, MLflow tracking).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("stages", help="list the stages with their inputs and outputs")
    p.set_defaults(func=cmd_stages)
    p = sub.add_parser("params", help="show every parameter of params.yaml with its meaning")
    p.set_defaults(func=cmd_params)
    p = sub.add_parser(
        "stage",
        help="run one pipeline stage (what dvc.yaml calls)",
        description="Run one stage: read its declared inputs, write its declared outputs atomically, "
        "log a nested MLflow run. Exit status: 1 when the stage rejects its input (outputs of the last "
        "good run are kept), 2 for a usage or configuration error, 3 for any other failure (a crash, "
        "the MLflow tracking server not answering: worth a retry).\n\nstages:\n" + _stage_table(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", choices=[s.name for s in STAGES], metavar="NAME", help="stage name (see below)")
    p.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    p.set_defaults(func=cmd_stage)
    p = sub.add_parser(
        "report",
        help="table and chart of every model's test metrics from MLflow (mean ± std over seeds)",
        description="Collect the latest evaluate run of each (model, seed) on a dataset from MLflow, and write "
        "models.md, models.csv and models.png (mean ± std over seeds) to --out; also logged to MLflow.",
    )
    p.add_argument("--dataset", help="dataset to report on (default: params.yaml data.name)")
    p.add_argument("--out", default="reports/summary", help="output folder (default: reports/summary)")
    p.add_argument("--no-track", action="store_true", help="do not log the report to MLflow")
    p.set_defaults(func=cmd_report)
    p = sub.add_parser(
        "compare",
        help="paired comparison of two evaluated runs (deltas with confidence intervals)",
        description="Compare two evaluations user by user: per metric, both means, the difference B - A, a "
        "paired bootstrap 95% confidence interval and the paired t-test p-value. A and B are MLflow run ids of "
        "evaluate_* runs (see the MLflow UI or `s2gr report`) or paths to *_per_user.parquet files "
        "(reports/eval/).",
    )
    p.add_argument("a", metavar="RUN_A", help="baseline: evaluate run id or per-user parquet path")
    p.add_argument("b", metavar="RUN_B", help="challenger: evaluate run id or per-user parquet path")
    p.add_argument("--split", choices=["valid", "test"], default="test")
    p.add_argument("--metrics", nargs="+", default=["recall_at_5", "recall_at_10", "ndcg_at_5", "ndcg_at_10"])
    p.add_argument("--boot", type=int, default=10_000, help="bootstrap resamples (default 10000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    p.set_defaults(func=cmd_compare)
    p = sub.add_parser(
        "explain",
        help="what a reasoning model thought for one user: S2GR's thinking vectors or SIDReasoner's trace, top-10",
        description="Uses the user's test-split history. S2GR (models/s2gr/best.pt): each thinking vector's "
        "nearest code cluster with example titles. SIDReasoner (models/sidreasoner_<phase>): the prompt and "
        "the greedy reasoning trace with every SID followed by its item's title, as infer_sidreasoner decodes. "
        "Both end with the top-10. USER is the dataset's own user key (MovieLens user id, Amazon reviewer id).",
    )
    p.add_argument("user", help="the user's key in the raw data")
    p.add_argument("--model", choices=["s2gr", "sidreasoner"], default="s2gr", help="which model (default s2gr)")
    p.add_argument(
        "--phase",
        choices=["align", "reason", "grpo"],
        default="grpo",
        help="SIDReasoner: the phase whose weights to use (default grpo, the one infer_sidreasoner decodes)",
    )
    p.add_argument(
        "--mode",
        choices=["plain", "thinking"],
        help="SIDReasoner: decoding mode (default: params.yaml's sidreasoner.infer.mode)",
    )
    p.set_defaults(func=cmd_explain)
    p = sub.add_parser(
        "serve",
        help="serve the champion model over HTTP (mlflow models serve, loopback by default)",
        description="Serve <registry.prefix>-<dataset>@champion (or a family's, or any model URI) with "
        "`mlflow models serve --env-manager local`. POST /invocations with "
        '{"dataframe_records": [{"history": ["50", "172"]}, {"user": "196"}], "params": {"k": 10}}: each request '
        "gives a history of item keys, item_ids (the project's ids) or a known user; the answer lists item_ids, "
        "item_keys, titles and scores per request. A bad request gets HTTP 400 naming the field and value. "
        "GET /ping (or /health) answers 200 once the model is loaded.",
    )
    p.add_argument("--family", choices=["sasrec", "tiger", "s2gr"], help="serve this family's registered model")
    p.add_argument("--alias", default="champion", help="registry alias to serve (default champion)")
    p.add_argument("--model-uri", help="serve this model URI instead (models:/..., runs:/..., a folder)")
    p.add_argument("--host", help="listen address (default serve.host, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default serve.port)")
    p.add_argument("--workers", type=int, default=1, help="server worker processes (default 1)")
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser(
        "data-drop",
        help="announce a new data drop: the Prefect deployment weekly-retrain runs at once (refresh_data)",
        description=f"Emit the Prefect event {DATA_DROP_EVENT!r} for a dataset to the server in PREFECT_API_URL. "
        "prefect.yaml gives the weekly-retrain deployment a trigger on it, so a worker re-reads the data source "
        "(fetch forced) and DVC re-runs only what the new data changes. Put the new files in the data directory "
        "first.",
    )
    p.add_argument("--dataset", help="the dataset that changed (default: params.yaml data.name)")
    p.add_argument("--note", help="free text kept in the event's payload (e.g. where the drop came from)")
    p.set_defaults(func=cmd_data_drop)
    return parser


def main(argv: list[str] | None = None) -> int:
    env.configure()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 0
    try:
        return int(args.func(args))
    except env.ProjectNotFound as exc:
        print(f"s2gr: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
