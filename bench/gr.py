"""Generative-recommender benchmark: TIGER, S2GR and its ablations on the same SIDs, several seeds.

    python bench/gr.py bench/configs/gr-amazon-beauty.yaml                  # everything (GPU: hours)
    python bench/gr.py bench/configs/gr-amazon-beauty.yaml --variants tiger s2gr --seeds 0
    python bench/gr.py bench/configs/gr-amazon-beauty.yaml --set merge_codes=true max_epochs=2 --tag probe

Builds the config's SIDs once with the pipeline's own semantic stages (in bench/work/<dataset>/,
rebuilt only when the semantic overrides change), then trains and evaluates every variant × seed
through the pipeline's own train_<mode> / evaluate_<mode> stages, each in its own process.
Writes bench/results/gr-<dataset>[-tag].{json,md} (test R@5, R@10, N@5, N@10 mean ± std, time per
epoch and to best, decoding users/s, the S2GR/TIGER time ratios, SASRec's numbers when
bench/sasrec.py has run) and one MLflow run per variant × seed in the experiment "s2gr-bench".
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    REPORTED,
    RESULTS,
    add_run_options,
    device_label,
    earlier_results,
    finish,
    load_config,
    log_run,
    override,
    prepare,
    run_all,
    run_folder,
    stat,
    worker_overrides,
    worker_run,
)

CLUSTER_ACC = ("cluster_acc_l1", "cluster_acc_l2", "cluster_acc_l3")
TIMES = ("seconds_per_epoch", "seconds_to_best", "train_samples_per_s", "inference_users_per_s", "peak_memory_mb")


def semantic_params(config: dict):
    work, params = prepare(config["dataset"])
    return work, override(params, config["semantic"])


def build_sids(config: dict) -> Path:
    """The config's SIDs in bench/work/<dataset>/data/sids, rebuilt when its semantic overrides change."""
    from s2gr_core.stages import get_stage

    work, params = semantic_params(config)
    identity = json.dumps({s: params.section(s) for s in ("embed", "cooccur", "codebook", "sids")}, sort_keys=True)
    stamp = work / "data" / "sids" / "bench-semantic.sha256"
    digest = hashlib.sha256(identity.encode()).hexdigest()
    if stamp.is_file() and stamp.read_text() == digest:
        print(f"SIDs of {stamp.parent} match the config: reused", flush=True)
        return work
    for name in ("embed", "cooccur", "codebook", "sids"):
        started = time.perf_counter()
        result = get_stage(name).run(params, work)
        print(f"[{name}] {time.perf_counter() - started:.1f}s: {result.summary}", flush=True)
    stamp.write_text(digest)
    return work


def trained_as_configured(work: Path, mode: str, cfg: Any) -> bool:
    """Whether ``work`` holds a finished training of ``cfg``: its metrics file, and a published best
    model trained with the same config (both are written when the stage ends; the SIDs are the
    config's, checked by build_sids)."""
    from s2gr_core.io import load_torch

    best, metrics = work / "models" / mode / "best.pt", work / "metrics" / f"train_{mode}.json"
    return metrics.is_file() and best.is_file() and load_torch(best).get("config") == asdict(cfg)


def run_one(config: dict, variant: str, seed: int, validation_only: bool = False, reuse_trained: bool = False) -> dict:
    """One variant × seed through the pipeline's own train and evaluate stages (train only when
    ``validation_only``: the result then holds the best epoch's validation signals, no test metrics;
    with ``reuse_trained``, a run already trained as configured, e.g. by a validation-only sweep, is
    evaluated without training again)."""
    import torch

    from s2gr_core.models.common import resolve_device
    from s2gr_core.stages import get_stage

    shared, params = semantic_params(config)
    work = run_folder(shared, f"{variant}-seed{seed}")
    fields = dict(config["variants"][variant])
    mode = fields.pop("mode")
    model = {**config["model"], "seed": seed}
    params = override(params, {mode: {**model, **fields}})
    torch.set_float32_matmul_precision(config.get("matmul_precision", "highest"))
    cfg = getattr(params, mode)
    if reuse_trained and trained_as_configured(work, mode, cfg):
        print(f"{work}: trained with this config already; evaluating that model", flush=True)
        device = str(resolve_device(cfg.device))
    else:
        device = get_stage(f"train_{mode}").run(params, work).tags.get("device", "?")
    train = json.loads((work / "metrics" / f"train_{mode}.json").read_text())
    if validation_only:
        scores = {"valid": {k.removeprefix("best_valid_"): v for k, v in train.items() if k.startswith("best_valid_")}}
    else:
        get_stage(f"evaluate_{mode}").run(params, work)
        scores = {"test": json.loads((work / "metrics" / f"eval_{mode}.json").read_text())["test"]}
    return {
        "variant": variant,
        "seed": seed,
        "mode": mode,
        **scores,
        "best_valid_ndcg_at_10": train["best_valid_ndcg_at_10"],
        "best_epoch": train["best_epoch"],
        "epochs_run": train["epochs_run"],
        "seconds_to_best": train["seconds_per_epoch"] * train["best_epoch"],
        **{k: train[k] for k in TIMES if k in train},
        "parameters": train["parameters"],
        "device": device_label(device),
        "config": asdict(cfg),
    }


def summarise(results: list[dict]) -> dict[str, dict]:
    """Per variant: mean ± std of the test metrics and times; plus S2GR/TIGER time ratios."""
    summary: dict[str, dict] = {}
    for variant in dict.fromkeys(r["variant"] for r in results):
        runs = [r for r in results if r["variant"] == variant]
        summary[variant] = {
            "seeds": [r["seed"] for r in runs],
            **{k: stat([r["test"][k] for r in runs]) for k in REPORTED},
            **{k: stat([r[k] for r in runs]) for k in (*TIMES, "best_epoch")},
        }
    if "tiger" in summary and "s2gr" in summary:
        t, s = summary["tiger"], summary["s2gr"]
        summary["ratios"] = {
            "train_seconds_per_epoch": s["seconds_per_epoch"]["mean"] / t["seconds_per_epoch"]["mean"],
            "train_seconds_to_best": s["seconds_to_best"]["mean"] / max(t["seconds_to_best"]["mean"], 1e-9),
            "decode_time_per_user": t["inference_users_per_s"]["mean"] / s["inference_users_per_s"]["mean"],
            "ndcg_at_10_gain": s["ndcg_at_10"]["mean"] / t["ndcg_at_10"]["mean"] - 1,
            "recall_at_10_gain": s["recall_at_10"]["mean"] / t["recall_at_10"]["mean"] - 1,
        }
    return summary


def validation_markdown(dataset: str, results: list[dict]) -> str:
    """The validation-only table: one row per run, lowest validation SID NLL first (the quantity the
    beam ranks by; the tuning choice), with its per-position CE, N@10 and cluster accuracies."""
    devices = sorted({r["device"] for r in results})
    columns = ("sid_nll", "ce_s1", "ce_s2", "ce_s3", "ndcg_at_10", "recall_at_10", *CLUSTER_ACC)
    lines = [
        f"# Validation-only runs on {dataset} (device {', '.join(devices)}; the test split was not read)",
        "",
        "| variant | seed | " + " | ".join(columns) + " | best/run epochs | s/epoch |",
        "|" + "---|" * (len(columns) + 4),
    ]
    for r in sorted(results, key=lambda r: r["valid"].get("sid_nll", float("inf"))):
        cells = " | ".join("—" if r["valid"].get(c) is None else f"{r['valid'][c]:.4f}" for c in columns)
        lines.append(
            f"| {r['variant']} | {r['seed']} | {cells} | {r['best_epoch']}/{r['epochs_run']} | "
            f"{r['seconds_per_epoch']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def sasrec_row(dataset: str) -> str | None:
    path = RESULTS / f"sasrec-{dataset}.json"
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    s, device = saved["summary"], saved["runs"][0]["device"]
    cells = " | ".join(f"{s[k]['mean']:.4f} ± {s[k]['std']:.4f}" for k in REPORTED)
    return f"| SASRec (bench/sasrec.py, {device}) | {cells} | {s['seconds_per_epoch']['mean']:.1f} | | | | |"


def markdown(dataset: str, results: list[dict], summary: dict) -> str:
    devices = sorted({r["device"] for r in results})
    lines = [
        f"# TIGER, S2GR and ablations on {dataset} (device {', '.join(devices)}; seeds per variant as listed)",
        "",
        "| variant | R@5 | R@10 | N@5 | N@10 | s/epoch | s to best | decode users/s | seeds | best/run epochs |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for variant, s in summary.items():
        if variant == "ratios":
            continue
        cells = " | ".join(f"{s[k]['mean']:.4f} ± {s[k]['std']:.4f}" for k in REPORTED)
        runs = [r for r in results if r["variant"] == variant]
        epochs = ", ".join(
            f"{r['best_epoch']}/{r['epochs_run']}{' (stopped)' if 'stopped_at_epoch' in r else ''}" for r in runs
        )
        lines.append(
            f"| {variant} | {cells} | {s['seconds_per_epoch']['mean']:.1f} | {s['seconds_to_best']['mean']:.0f} | "
            f"{s['inference_users_per_s']['mean']:.1f} | {len(s['seeds'])} | {epochs} |"
        )
    if (row := sasrec_row(dataset)) is not None:
        lines.append(row)
    if any("stopped_at_epoch" in r for r in results):
        lines += [
            "",
            "(stopped): the run's time budget (--deadline) ended its training; it was scored with its best weights.",
        ]
    if "ratios" in summary:
        r = summary["ratios"]
        lines += [
            "",
            f"S2GR / TIGER: training time per epoch {r['train_seconds_per_epoch']:.2f}x (target <= 1.35), "
            f"to best {r['train_seconds_to_best']:.2f}x; decoding time per user {r['decode_time_per_user']:.2f}x "
            f"(target <= 1.10); N@10 {r['ndcg_at_10_gain']:+.1%}, R@10 {r['recall_at_10_gain']:+.1%}.",
        ]
    return "\n".join(lines) + "\n"


def log_to_mlflow(results: list[dict], config_path: Path) -> None:
    for r in results:
        log_run(
            f"gr-{r['variant']}-seed{r['seed']}",
            {
                "model": r["mode"],
                "variant": r["variant"],
                "seed": str(r["seed"]),
                "device": r["device"],
                "benchmark": config_path.name,
                **({"stopped_at_epoch": str(r["stopped_at_epoch"])} if "stopped_at_epoch" in r else {}),
            },
            {
                **{f"{split}.{k}": v for split in ("test", "valid") for k, v in r.get(split, {}).items()},
                **{k: r[k] for k in (*TIMES, "best_epoch")},
            },
            {f"{r['mode']}.{k}": v for k, v in r["config"].items() if k != "seed"},
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path, help="frozen benchmark config (bench/configs/gr-*.yaml)")
    parser.add_argument("--variants", nargs="+", help="run only these variants (default: all of the config)")
    parser.add_argument("--seeds", type=int, nargs="+", help="default: the config's seeds")
    parser.add_argument("--tag", default="", help="suffix of the result files, so a probe keeps the frozen run's")
    add_run_options(parser)
    parser.add_argument(
        "--set",
        dest="overrides",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="override fields of the config's model section, e.g. --set merge_codes=true max_epochs=2",
    )
    parser.add_argument(
        "--validation-only",
        action="store_true",
        help="train only and tabulate each run's best validation epoch (SID NLL, CE, N@10, cluster accuracy), "
        "lowest SID NLL first; the test split is not read: a tuning sweep, e.g. --variants sweep-a01 --tag sweep",
    )
    parser.add_argument(
        "--reuse-trained",
        action="store_true",
        help="evaluate a run whose folder already holds a finished training with the same config (e.g. the "
        "sweep's choice, trained by --validation-only) instead of training it again",
    )
    parser.add_argument("--worker", nargs=2, metavar=("VARIANT", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    config = load_config(args.config, args.overrides, "model")
    if args.worker:
        result = run_one(config, args.worker[0], int(args.worker[1]), args.validation_only, args.reuse_trained)
        print("RESULT " + json.dumps(result), flush=True)
        return 0
    unknown = set(args.variants or ()) - set(config["variants"])
    if unknown:
        raise SystemExit(f"unknown variants {sorted(unknown)}: the config has {sorted(config['variants'])}")
    name = f"gr-{config['dataset']}{'-' + args.tag if args.tag else ''}"
    if args.from_results:
        results = earlier_results(args.from_results)
    else:
        shared = build_sids(config)
        overrides = worker_overrides(args, config["model"])
        runs = []
        for variant in args.variants or list(config["variants"]):
            for seed in args.seeds or config["seeds"]:
                command = [sys.executable, __file__, str(args.config), "--worker", variant, str(seed)]
                command += ["--validation-only"] if args.validation_only else []
                command += ["--reuse-trained"] if args.reuse_trained else []
                mode = config["variants"][variant]["mode"]
                runs.append(worker_run(shared, f"{variant}-seed{seed}", command, overrides, mode))
        results = run_all(runs, args.jobs, args.deadline, args.deployment)
        for r in results:
            scores = r.get("test", r.get("valid"))
            print(r["variant"], r["seed"], {k: r[k] for k in ("best_epoch", "seconds_per_epoch", "device")}, scores)
    validation = all("valid" in r for r in results) and bool(results)
    finish(
        args,
        name,
        results,
        (lambda runs: {}) if validation else summarise,
        lambda runs, summary: (
            validation_markdown(config["dataset"], runs) if validation else markdown(config["dataset"], runs, summary)
        ),
        lambda runs: log_to_mlflow(runs, args.config),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
