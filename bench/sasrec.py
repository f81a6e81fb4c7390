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
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    REPORTED,
    add_run_options,
    device_label,
    earlier_results,
    finish,
    load_config,
    log_run,
    prepare,
    run_all,
    run_folder,
    stat,
    worker_overrides,
    worker_run,
)


def run_seed(config: dict, seed: int) -> dict:
    """One seed through the pipeline's own stages (train_sasrec, evaluate_sasrec) in the bench folder."""
    from s2gr_core.stages import get_stage

    shared, params = prepare(config["dataset"])
    work = run_folder(shared, f"sasrec-seed{seed}")
    params = replace(params, sasrec=replace(params.sasrec, **{**config["sasrec"], "seed": seed}))
    started = time.time()
    trained = get_stage("train_sasrec").run(params, work)
    train_seconds = time.time() - started
    get_stage("evaluate_sasrec").run(params, work)
    train = json.loads((work / "metrics" / "train_sasrec.json").read_text())
    evaluation = json.loads((work / "metrics" / "eval_sasrec.json").read_text())
    device = trained.tags["device"]
    excluded = test_without_history(work, params.split.max_history, params.inference.batch_size, device)
    return {
        "seed": seed,
        "dataset": config["dataset"],
        "test": evaluation["test"],
        "test_history_excluded": excluded,
        "valid": evaluation["valid"],
        "best_epoch": train["best_epoch"],
        "epochs_run": train["epochs_run"],
        "seconds_per_epoch": train["seconds_per_epoch"],
        "train_seconds": train_seconds,
        "train_samples_per_s": train["train_samples_per_s"],
        "inference_users_per_s": train["inference_users_per_s"],
        "peak_memory_mb": train["peak_memory_mb"],
        "device": device_label(device),
        "config": config["sasrec"],
    }


def test_without_history(work: Path, max_history: int, batch_size: int, device: str) -> dict[str, float]:
    """Test metrics of the same best model with the user's history items removed from its lists.

    METHOD.md keeps history items by default and allows a flag to drop them; on a catalogue
    without repeat purchases (Amazon Beauty 5-core) a target is never in its history, so the
    flag can only help. Both readings are reported, each labelled.
    """
    import torch

    from s2gr_core.models.sasrec.train import load_model, validation_metrics
    from s2gr_core.split import load_eval

    _, histories, targets = load_eval(str(work / "data" / "split" / "test.parquet"))
    model = load_model(work / "models" / "sasrec" / "best.pt").to(device)
    recent = [h[-max_history:] for h in histories]
    return validation_metrics(model, recent, targets, (1, 5, 10, 20), batch_size, torch.device(device), True)


def log_to_mlflow(results: list[dict], config_path: Path) -> None:
    for r in results:
        log_run(
            f"sasrec-{r['dataset']}-seed{r['seed']}",
            {
                "dataset": r["dataset"],
                "model": "sasrec",
                "seed": str(r["seed"]),
                "device": r["device"],
                "benchmark": config_path.name,
            },
            {
                **{f"test.{k}": v for k, v in r["test"].items()},
                **{f"test_history_excluded.{k}": v for k, v in r["test_history_excluded"].items()},
                **{
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
                },
            },
            {f"sasrec.{k}": v for k, v in r["config"].items() if k != "seed"},
        )


def summarise(results: list[dict]) -> dict:
    return {
        **{k: stat([r["test"][k] for r in results]) for k in REPORTED},
        **{f"{k}_history_excluded": stat([r["test_history_excluded"][k] for r in results]) for k in REPORTED},
        **{
            k: stat([r[k] for r in results])
            for k in ("best_epoch", "seconds_per_epoch", "train_seconds", "peak_memory_mb", "inference_users_per_s")
        },
    }


def markdown(dataset: str, results: list[dict], summary: dict) -> str:
    lines = [
        f"# SASRec on {dataset} ({len(results)} seeds; device {', '.join(sorted({r['device'] for r in results}))})",
        "",
        "| seed | R@5 | R@10 | N@5 | N@10 | best epoch | epochs | s/epoch | peak MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        t = r["test"]
        lines.append(
            f"| {r['seed']} | {t['recall_at_5']:.4f} | {t['recall_at_10']:.4f} | {t['ndcg_at_5']:.4f} | "
            f"{t['ndcg_at_10']:.4f} | {r['best_epoch']} | {r['epochs_run']}"
            f"{' (stopped)' if 'stopped_at_epoch' in r else ''} | "
            f"{r['seconds_per_epoch']:.1f} | {r['peak_memory_mb']:.0f} |"
        )
    s = summary
    lines.append(
        "| **mean ± std** | "
        + " | ".join(f"{s[k]['mean']:.4f} ± {s[k]['std']:.4f}" for k in REPORTED)
        + f" | {s['best_epoch']['mean']:.1f} | | {s['seconds_per_epoch']['mean']:.1f} | "
        f"{s['peak_memory_mb']['mean']:.0f} |"
    )
    lines += [
        "",
        "The table keeps history items in the lists (METHOD.md's default). The same best models with each",
        "user's history items removed from the lists (no Beauty target is ever in its history):",
        "",
        "| R@5 | R@10 | N@5 | N@10 |",
        "|---|---|---|---|",
        "| "
        + " | ".join(
            f"{s[k + '_history_excluded']['mean']:.4f} ± {s[k + '_history_excluded']['std']:.4f}" for k in REPORTED
        )
        + " |",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path, help="frozen benchmark config (bench/configs/*.yaml)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--tag", default="", help="suffix of the result files, so a probe keeps the baseline's")
    add_run_options(parser)
    parser.add_argument(
        "--set",
        dest="overrides",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="override sasrec fields of the config for a probe, e.g. --set hidden=128 lr=0.001",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    config = load_config(args.config, args.overrides, "sasrec")
    if args.worker:
        print("RESULT " + json.dumps(run_seed(config, args.seeds[0])), flush=True)
        return 0
    dataset = config["dataset"]
    if args.from_results:
        results = earlier_results(args.from_results)
    else:
        shared, _ = prepare(dataset)
        overrides = worker_overrides(args, config["sasrec"])
        runs = []
        for seed in args.seeds:
            command = [sys.executable, __file__, str(args.config), "--seeds", str(seed), "--worker"]
            runs.append(worker_run(shared, f"sasrec-seed{seed}", command, overrides, "sasrec"))
        results = run_all(runs, args.jobs, args.deadline, args.deployment)
    finish(
        args,
        f"sasrec-{dataset}{'-' + args.tag if args.tag else ''}",
        results,
        summarise,
        lambda runs, summary: markdown(dataset, runs, summary),
        lambda runs: log_to_mlflow(runs, args.config),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
