"""Latency and load of the served recommender: ``s2gr serve`` on 127.0.0.1, hammered by N clients.

Three phases of ``--seconds`` each, every client sending its next request as soon as the last one
is answered (closed loop, one keep-alive connection per client):

1. batch 1, one client: the latency of one request alone (p50 / p95 / p99);
2. batch 1, ``--clients`` (8) clients: latency under load, queueing included, and calls/s;
3. batch ``--batch`` (64), ``--clients`` clients: users/s.

Every non-200 answer or connection error counts as an error. Requests are real histories of the
dataset's validation split, sent as item keys. The model is one of:

* ``--model-uri URI``: a registered or logged model (``models:/s2gr-ml-100k@champion``);
* ``--untrained DATASET --mode s2gr``: the benchmark's paper-size model (``--gr-config``, the issue's
  "Beauty paper size") with fresh, untrained weights and the dataset's SIDs from bench/work (SASRec:
  ``bench/configs/sasrec-<dataset>.yaml``'s size). Latency does not depend on what the weights
  learned: the same shapes, the same beam search over the same decoding tables.

Results: ``bench/results/serve-<label>.{json,md}`` and an MLflow run in ``s2gr-bench``. Nothing
else should run on the machine meanwhile; the clients share its cores with the server (said in the
result). Example::

    python bench/serve_latency.py --untrained amazon-beauty --mode s2gr --clients 8 --seconds 60
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, ROOT, device_label, load_config, log_run, prepare  # noqa: I001  (sets up the env first)

import numpy as np
import pandas as pd


@dataclass(slots=True)
class Load:
    """What one phase measured."""

    batch: int
    clients: int
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""

    def summary(self) -> dict[str, float | int | str]:
        lat = np.asarray(self.latencies_ms) if self.latencies_ms else np.asarray([np.nan])
        calls = len(self.latencies_ms)
        return {
            "batch": self.batch,
            "clients": self.clients,
            "seconds": round(self.seconds, 2),
            "calls": calls,
            "errors": self.errors,
            "first_error": self.first_error,
            "calls_per_s": round(calls / self.seconds, 2),
            "users_per_s": round(calls * self.batch / self.seconds, 1),
            **{f"p{q}_ms": round(float(np.percentile(lat, q)), 2) for q in (50, 95, 99)},
            "max_ms": round(float(lat.max()), 2),
        }


def wait_ready(host: str, port: int, timeout: float, server: subprocess.Popen | None = None) -> float:
    """Seconds until ``GET /ping`` answers 200; raises if the server exits or ``timeout`` passes."""
    started = time.time()
    while time.time() - started < timeout:
        if server is not None and server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode} before it was ready")
        try:
            conn = http.client.HTTPConnection(host, port, timeout=2)
            conn.request("GET", "/ping")
            if conn.getresponse().status == 200:
                return time.time() - started
        except OSError:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"http://{host}:{port}/ping did not answer 200 within {timeout:.0f}s")


def payloads(histories: list[list[str]], batch: int, k: int) -> list[bytes]:
    """JSON bodies of ``batch`` requests each, cycling through ``histories`` (item keys)."""
    out = []
    for start in range(0, max(len(histories) - batch + 1, 1), batch):
        records = [{"history": h} for h in histories[start : start + batch]]
        out.append(json.dumps({"dataframe_records": records, "params": {"k": k}}).encode())
    return out


def hammer(host: str, port: int, bodies: list[bytes], clients: int, seconds: float, batch: int) -> Load:
    """``clients`` threads, each POSTing the next body as soon as the last is answered, for ``seconds``."""
    load = Load(batch, clients, seconds)
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def client(offset: int) -> None:
        conn = http.client.HTTPConnection(host, port, timeout=60)
        i = offset
        while time.perf_counter() < deadline:
            body = bodies[i % len(bodies)]
            i += clients
            started = time.perf_counter()
            try:
                conn.request("POST", "/invocations", body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                text = resp.read()
                ok, why = resp.status == 200, f"HTTP {resp.status}: {text[:200]!r}"
            except (OSError, http.client.HTTPException) as exc:
                ok, why = False, f"{type(exc).__name__}: {exc}"
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=60)
            elapsed = (time.perf_counter() - started) * 1000.0
            with lock:
                if ok:
                    load.latencies_ms.append(elapsed)
                else:
                    load.errors += 1
                    load.first_error = load.first_error or why
        conn.close()

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return load


def untrained_model(dataset: str, mode: str, gr_config: Path, dest: Path) -> Path:
    """A bundle of the benchmark-size ``mode`` model with fresh weights on ``dataset``: TIGER/S2GR at
    ``gr_config``'s size on its SIDs, SASRec at ``bench/configs/sasrec-<dataset>.yaml``'s."""
    from dataclasses import replace

    from gr import build_sids

    from s2gr.promote import bundle_for
    from s2gr_core.io import save_torch
    from s2gr_core.models.runtime import runtime_for
    from s2gr_core.split import load_train
    from s2gr_core.stages.models import catalogue_size

    work, params = prepare(dataset)
    items = work / "data" / "processed" / "items.parquet"
    n_items = catalogue_size(items, params.inference.top_k)
    users, sequences = load_train(str(work / "data" / "split" / "train.parquet"))
    runtime = runtime_for("cpu", 1, "fp32", False)
    if mode == "sasrec":
        from s2gr_core.models.sasrec.train import SASRecTrainer

        overrides = load_config(ROOT / "bench" / "configs" / f"sasrec-{dataset}.yaml", [], "sasrec")["sasrec"]
        cfg = replace(params.sasrec, **{**overrides, "threads": 1})
        trainer = SASRecTrainer(cfg, sequences, n_items, params.split.max_history, runtime)
        state = {"config": asdict(cfg), "n_items": n_items, "max_len": params.split.max_history}
    else:
        from s2gr_core.models.gr.train import GRTrainer
        from s2gr_core.stages.generative import load_semantic

        config = load_config(gr_config, [], "model")
        build_sids(config)  # the SIDs the config names (made once, reused from bench/work)
        cfg = replace(getattr(params, mode), **{**config["model"], "max_epochs": 1, "threads": 1})
        sem = load_semantic(work / "data" / "sids", n_items)
        trainer = GRTrainer(cfg, mode, sem, users, sequences, params.split.max_history, runtime)
        state = {"spec": asdict(trainer.model.spec)}
    model_dir = dest / "model"
    save_torch({"model": trainer.model.state_dict(), **state}, model_dir / "best.pt")
    params = replace(params, **{mode: cfg})
    bundle_for(params, mode, dest / "bundle", model_dir, items, work / "data/processed/interactions.parquet",
               work / "data" / "sids")  # fmt: skip
    return dest / "bundle"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model-uri", help="a registered or logged model, e.g. models:/s2gr-ml-100k@champion")
    source.add_argument("--untrained", metavar="DATASET", help="paper-size model with fresh weights on DATASET")
    parser.add_argument(
        "--mode", choices=["sasrec", "tiger", "s2gr"], default="s2gr", help="with --untrained: which model"
    )
    parser.add_argument("--gr-config", type=Path, default=ROOT / "bench" / "configs" / "gr-amazon-beauty.yaml")
    parser.add_argument("--dataset", default="ml-100k", help="with --model-uri: whose validation histories to send")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each phase (default 60)")
    parser.add_argument("--batch", type=int, default=64, help="requests per call in the throughput phase")
    parser.add_argument("--k", type=int, default=10, help="list length asked for")
    parser.add_argument("--port", type=int, default=5091)
    parser.add_argument("--workers", type=int, default=1, help="server worker processes")
    parser.add_argument("--label", help="name of the result files (default: from the model)")
    parser.add_argument("--no-mlflow", action="store_true", help="write the result files only")
    args = parser.parse_args()
    host = "127.0.0.1"
    with tempfile.TemporaryDirectory() as tmp:
        dataset = args.untrained or args.dataset
        uri, label = args.model_uri, args.label
        if args.untrained:
            import mlflow

            from s2gr.registry import pyfunc_spec

            bundle = untrained_model(args.untrained, args.mode, args.gr_config, Path(tmp))
            uri = str(Path(tmp) / "pyfunc")
            mlflow.pyfunc.save_model(uri, **pyfunc_spec(bundle))
            label = (
                label or f"{args.untrained}-{args.mode}-{'bench' if args.mode == 'sasrec' else 'paper'}-size-untrained"
            )
        label = label or str(uri).replace("models:/", "").replace("/", "-").replace("@", "-")
        work, _ = prepare(dataset)
        from s2gr_core.split import load_eval

        keys = pd.read_parquet(work / "data/processed/items.parquet")["item_key"].astype(str).to_numpy()
        _, hist, _ = load_eval(str(work / "data" / "split" / "valid.parquet"))
        order = np.random.default_rng(0).permutation(len(hist))
        histories = [keys[hist[i]].tolist() for i in order]
        command = [sys.executable, "-m", "s2gr.cli", "serve", "--model-uri", str(uri), "--host", host,
                   "--port", str(args.port), "--workers", str(args.workers)]  # fmt: skip
        log = Path(tmp) / "server.log"
        with log.open("w") as out:
            server = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ))
        try:
            ready = wait_ready(host, args.port, 300, server)
            print(f"server ready in {ready:.1f}s; {args.clients} clients x {args.seconds:.0f}s per phase", flush=True)
            hammer(host, args.port, payloads(histories, 1, args.k)[:50], 1, 3.0, 1)  # warm-up
            phases = [
                hammer(host, args.port, payloads(histories, b, args.k), clients, args.seconds, b)
                for b, clients in ((1, 1), (1, args.clients), (args.batch, args.clients))
            ]
        finally:
            server.terminate()
            server.wait(30)
        server_log = log.read_text()[-2000:]
    report = {
        "model": str(uri)
        if args.model_uri
        else f"{args.mode} at the benchmark size, untrained weights"
        + ("" if args.mode == "sasrec" else f" ({args.gr_config.name})"),
        "dataset": dataset,
        "device": device_label("cpu"),
        "host": host,
        "workers": args.workers,
        "k": args.k,
        "note": "clients run on the same machine as the server and share its cores",
        "phases": [p.summary() for p in phases],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"serve-{label}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    if any(p.errors for p in phases):
        print(f"server log (tail):\n{server_log}", file=sys.stderr)
    if not args.no_mlflow:
        metrics = {
            f"b{p['batch']}_{k}": v for p in report["phases"] for k, v in p.items() if isinstance(v, int | float)
        }
        log_run(f"serve-{label}", {"bench": "serve_latency", "device": report["device"]}, metrics,
                {"model": report["model"], "clients": args.clients, "seconds": args.seconds},
                [stem.with_suffix(".json"), stem.with_suffix(".md")])  # fmt: skip
    return 1 if any(p.errors for p in phases) else 0


def markdown(report: dict) -> str:
    lines = [
        f"Model: {report['model']} on {report['dataset']}; {report['device']}, server workers {report['workers']}, "
        f"k={report['k']}; {report['note']}.",
        "",
        "| batch | clients | seconds | calls | errors | calls/s | users/s | p50 ms | p95 ms | p99 ms | max ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in report["phases"]:
        lines.append(
            f"| {p['batch']} | {p['clients']} | {p['seconds']} | {p['calls']} | {p['errors']} | {p['calls_per_s']} "
            f"| {p['users_per_s']} | {p['p50_ms']} | {p['p95_ms']} | {p['p99_ms']} | {p['max_ms']} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
