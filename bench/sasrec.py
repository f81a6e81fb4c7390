"""SASRec benchmark: several seeds on one dataset, test metrics mean ± std, speed and memory.

    python bench/sasrec.py bench/configs/sasrec-amazon-beauty.yaml --seeds 0 1 2

Prepares the split with the pipeline's own stages (in bench/work/<dataset>/), trains each
seed in its own process (so peak memory is per run), and writes
bench/results/sasrec-<dataset>.{json,md}; every seed is also an MLflow run in the
experiment "s2gr-bench" (same tracking store as the pipeline).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from s2gr import env  # noqa: E402

env.configure(ROOT)

from s2gr_core.config import SASRecConfig, load_params  # noqa: E402

REPORTED = ("recall_at_5", "recall_at_10", "ndcg_at_5", "ndcg_at_10")


def prepare(dataset: str) -> tuple[Path, object]:
    from s2gr_core.stages import get_stage

    params = load_params(ROOT / "params.yaml")
    params = replace(params, data=replace(params.data, name=dataset))
    work = ROOT / "bench" / "work" / dataset
    if not (work / "data" / "split" / "test.parquet").is_file():
        for name in ("fetch", "ingest", "validate", "split"):
            get_stage(name).run(params, work)
    return work, params


def run_seed(config_path: Path, seed: int) -> dict:
    """One seed through the pipeline's own stages (train_sasrec, evaluate_sasrec) in the bench folder."""
    import json as _json

    from s2gr_core.stages import get_stage

    config = yaml.safe_load(config_path.read_text())
    work, params = prepare(config["dataset"])
    params = replace(params, sasrec=SASRecConfig(**{**config["sasrec"], "seed": seed}))
    started = time.time()
    trained = get_stage("train_sasrec").run(params, work)
    train_seconds = time.time() - started
    get_stage("evaluate_sasrec").run(params, work)
    train = _json.loads((work / "metrics" / "train_sasrec.json").read_text())
    evaluation = _json.loads((work / "metrics" / "eval_sasrec.json").read_text())
    return {
        "seed": seed,
        "dataset": config["dataset"],
        "test": evaluation["test"],
        "valid": evaluation["valid"],
        "best_epoch": train["best_epoch"],
        "epochs_run": train["epochs_run"],
        "seconds_per_epoch": train["seconds_per_epoch"],
        "train_seconds": train_seconds,
        "train_samples_per_s": train["train_samples_per_s"],
        "inference_users_per_s": train["inference_users_per_s"],
        "peak_memory_mb": train["peak_memory_mb"],
        "device": trained.tags["device"],
        "config": config["sasrec"],
    }


def log_to_mlflow(results: list[dict], summary: dict, config_path: Path) -> None:
    from mlflow.entities import Metric, Param

    from s2gr.tracking import client, experiment_id, git_info

    mlf = client(ROOT)
    exp = experiment_id(mlf, "s2gr-bench", ROOT)
    for r in results:
        tags = {
            **git_info(ROOT),
            "dataset": r["dataset"],
            "model": "sasrec",
            "seed": str(r["seed"]),
            "device": r["device"],
            "benchmark": config_path.name,
        }
        run = mlf.create_run(exp, run_name=f"sasrec-{r['dataset']}-seed{r['seed']}", tags=tags)
        now = int(time.time() * 1000)
        metrics = {f"test.{k}": v for k, v in r["test"].items()}
        metrics.update(
            {
                k: r[k]
                for k in (
                    "best_epoch",
                    "epochs_run",
                    "seconds_per_epoch",
                    "train_seconds",
                    "train_samples_per_s",
                    "inference_users_per_s",
                    "peak_memory_mb",
                )
            }
        )
        mlf.log_batch(
            run.info.run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
            params=[Param(f"sasrec.{k}", str(v)) for k, v in r["config"].items() if k != "seed"],
        )
        mlf.set_terminated(run.info.run_id)
    del summary


def summarise(results: list[dict]) -> dict:
    def stat(values: list[float]) -> dict:
        arr = np.asarray(values, dtype=float)
        return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0}

    return {
        **{k: stat([r["test"][k] for r in results]) for k in REPORTED},
        **{
            k: stat([r[k] for r in results])
            for k in ("best_epoch", "seconds_per_epoch", "train_seconds", "peak_memory_mb", "inference_users_per_s")
        },
    }


def markdown(dataset: str, results: list[dict], summary: dict) -> str:
    lines = [
        f"# SASRec on {dataset} ({len(results)} seeds; device {results[0]['device']}; "
        f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores)",
        "",
        "| seed | R@5 | R@10 | N@5 | N@10 | best epoch | epochs | s/epoch | peak MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        t = r["test"]
        lines.append(
            f"| {r['seed']} | {t['recall_at_5']:.4f} | {t['recall_at_10']:.4f} | {t['ndcg_at_5']:.4f} | "
            f"{t['ndcg_at_10']:.4f} | {r['best_epoch']} | {r['epochs_run']} | "
            f"{r['seconds_per_epoch']:.1f} | {r['peak_memory_mb']:.0f} |"
        )
    s = summary
    lines.append(
        "| **mean ± std** | "
        + " | ".join(f"{s[k]['mean']:.4f} ± {s[k]['std']:.4f}" for k in REPORTED)
        + f" | {s['best_epoch']['mean']:.1f} | | {s['seconds_per_epoch']['mean']:.1f} | "
        f"{s['peak_memory_mb']['mean']:.0f} |"
    )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path, help="frozen benchmark config (bench/configs/*.yaml)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(run_seed(args.config, args.seeds[0])), flush=True)
        return 0
    dataset = yaml.safe_load(args.config.read_text())["dataset"]
    prepare(dataset)
    results = []
    for seed in args.seeds:
        print(f"== {dataset} seed {seed}", flush=True)
        proc = subprocess.run(
            [sys.executable, __file__, str(args.config), "--seeds", str(seed), "--worker"],
            capture_output=True,
            text=True,
            check=False,
        )
        print(proc.stdout[-3000:], proc.stderr[-2000:] if proc.returncode else "", flush=True)
        if proc.returncode:
            return proc.returncode
        results.append(json.loads(proc.stdout.rsplit("RESULT ", 1)[1]))
    summary = summarise(results)
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"sasrec-{dataset}.json").write_text(json.dumps({"summary": summary, "runs": results}, indent=2))
    table = markdown(dataset, results, summary)
    (out / f"sasrec-{dataset}.md").write_text(table)
    log_to_mlflow(results, summary, args.config)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
