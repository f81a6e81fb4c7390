"""SIDReasoner benchmark: every phase and decoding mode, on the SIDs a GR benchmark config builds, several seeds.

    python bench/sidreasoner.py bench/configs/gr-ml-100k.yaml --seeds 0 1
    python bench/sidreasoner.py bench/configs/gr-ml-100k.yaml --set grpo.prompts=256 grpo.epochs=2 --tag longer

The SIDs are the GR config's (built once in bench/work/<dataset>/ by bench/gr.py's own code, so
SIDReasoner, TIGER and S2GR decode the same codes). Per seed, in bench/work/<dataset>/runs/
sidreasoner-seed<N>/, the pipeline's own stage functions run with params.yaml's ``sidreasoner`` section
(plus ``--set``): the corpus, stage-1 SFT, stage-2 SFT and GRPO; then the lists are decoded and evaluated
after stage 1 (plain), stage 2 (plain, thinking) and GRPO (plain, thinking). Writes
bench/results/sidreasoner-<dataset>[-tag].{json,md}: test R@5, R@10, N@5, N@10 and valid N@10 (mean ± std
over seeds), the share of unconstrained greedy answers that name no real item, decoding users/s, peak memory,
training seconds per phase, GRPO's reward (first and last step), parameters and device; TIGER and S2GR rows
from bench/results/gr-<dataset>.json when bench/gr.py has run; one MLflow run per seed ("s2gr-bench").
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPORTED, RESULTS, device_label, finish, log_run, run_folder, stat
from gr import build_sids, semantic_params

from s2gr_core.config import Params

PHASES = (("align", "plain"), ("reason", "plain"), ("reason", "thinking"), ("grpo", "plain"), ("grpo", "thinking"))
TRAINING = ("sidreasoner_corpus", "train_sidreasoner_align", "train_sidreasoner_reason", "train_sidreasoner_grpo")


def with_sets(params: Params, sets: list[str], seed: int) -> Params:
    """``params`` with ``sidreasoner`` fields replaced: ``SUB.KEY=VALUE`` (``grpo.prompts=256``) or ``KEY=VALUE``."""
    import yaml

    sidr = replace(params.sidreasoner, seed=seed)
    for item in sets:
        key, sep, value = item.partition("=")
        path = key.split(".")
        if not sep or len(path) > 2:
            raise SystemExit(f"--set {item!r}: expected SUB.KEY=VALUE or KEY=VALUE of the sidreasoner section")
        try:
            if len(path) == 1:
                sidr = replace(sidr, **{path[0]: yaml.safe_load(value)})
            else:
                section = getattr(sidr, path[0])
                sidr = replace(sidr, **{path[0]: replace(section, **{path[1]: yaml.safe_load(value)})})
        except (AttributeError, TypeError) as exc:
            raise SystemExit(f"--set {item!r}: {exc}") from None
    return replace(params, sidreasoner=sidr)


def run_seed(config: dict, sets: list[str], seed: int) -> dict:
    """Train every phase for one seed, then decode and evaluate each (phase, mode)."""
    from s2gr_core.models.common import resolve_device
    from s2gr_core.stages import get_stage
    from s2gr_core.stages.evaluate import evaluate_stage
    from s2gr_core.stages.sidreasoner import infer_stage

    build_sids(config)
    shared, params = semantic_params(config)
    params = with_sets(params, sets, seed)
    work = run_folder(shared, f"sidreasoner-seed{seed}")
    corpus = work / "sidreasoner"  # the corpus depends on the seed: kept in the run's own folder, not in data/
    train_seconds = {}
    for name in TRAINING:
        stage = get_stage(name)
        started = time.time()
        stage.run(params, work, **({"corpus": corpus} if "corpus" in {**stage.deps, **stage.outs} else {}))
        train_seconds[name] = round(time.time() - started, 1)
    grpo = json.loads((work / "metrics" / "train_sidreasoner_grpo.json").read_text())
    split = {k: work / v for k, v in get_stage("infer_sidreasoner").deps.items() if k != "model_dir"}
    rows = []
    for phase, mode in PHASES:
        tag = f"{phase}-{mode}"
        decoding = replace(params.sidreasoner, infer=replace(params.sidreasoner.infer, mode=mode))
        p = replace(params, sidreasoner=decoding)
        predictions, infer_metrics = work / "predictions" / f"sidreasoner-{tag}", work / "metrics" / f"infer-{tag}.json"
        infer_stage(
            p,
            model_dir=work / "models" / f"sidreasoner_{phase}",
            predictions=predictions,
            metrics=infer_metrics,
            **split,
        )
        evaluate_stage(
            p,
            model="sidreasoner",
            predictions=predictions,
            items=split["items"],
            valid=split["valid"],
            test=split["test"],
            per_user=work / "reports" / "eval" / f"sidreasoner-{tag}_per_user.parquet",
            metrics=work / "metrics" / f"eval-{tag}.json",
        )
        scores = json.loads((work / "metrics" / f"eval-{tag}.json").read_text())
        decoded = json.loads(infer_metrics.read_text())
        rows.append(
            {
                "phase": phase,
                "mode": mode,
                "test": scores["test"],
                "valid_ndcg_at_10": scores["valid"]["ndcg_at_10"],
                **decoded,
            }
        )
    return {
        "variant": "sidreasoner",
        "seed": seed,
        "phases": rows,
        "train_seconds": train_seconds,
        "grpo": grpo,
        "parameters": rows[0]["parameters"],
        "device": device_label(str(resolve_device(params.sidreasoner.device))),
        "config": asdict(params.sidreasoner),
    }


def summarise(results: list[dict]) -> dict[str, Any]:
    """Per (phase, mode): mean ± std over seeds of the test metrics, valid N@10, invalid share, decoding speed."""
    summary: dict[str, Any] = {}
    for phase, mode in PHASES:
        rows = [next(r for r in run["phases"] if (r["phase"], r["mode"]) == (phase, mode)) for run in results]
        summary[f"{phase}-{mode}"] = {
            **{k: stat([r["test"][k] for r in rows]) for k in REPORTED},
            **{
                k: stat([r[k] for r in rows])
                for k in ("valid_ndcg_at_10", "invalid_share", "inference_users_per_s", "peak_memory_mb")
            },
        }
    summary["train_seconds"] = {k: stat([r["train_seconds"][k] for r in results]) for k in TRAINING}
    summary["grpo_reward"] = {
        k: stat([r["grpo"][k] for r in results]) for k in ("reward_first", "reward_last", "reward_mean")
    }
    return summary


def gr_rows(dataset: str) -> list[str]:
    """TIGER and S2GR (and more) from bench/gr.py's results on the same SIDs, when it has run."""
    path = RESULTS / f"gr-{dataset}.json"
    if not path.is_file():
        return [f"| (no {path.name}: run bench/gr.py with the same config for TIGER and S2GR) | | | | | | | | |"]
    saved = json.loads(path.read_text())
    out = []
    for variant, s in saved["summary"].items():
        if variant in ("tiger", "s2gr"):
            cells = " | ".join(f"{s[k]['mean']:.4f} ± {s[k]['std']:.4f}" for k in REPORTED)
            out.append(
                f"| {variant} (bench/gr.py, {saved['runs'][0]['device']}) | | {cells} | | | "
                f"{s['inference_users_per_s']['mean']:.0f} | |"
            )
    return out


def markdown(dataset: str, results: list[dict], summary: dict) -> str:
    devices = sorted({r["device"] for r in results})
    seeds = [r["seed"] for r in results]
    lines = [
        f"# SIDReasoner on {dataset}: each phase and decoding mode (device {', '.join(devices)}; seeds {seeds}; "
        f"{results[0]['parameters']:,} parameters)",
        "",
        "| phase | mode | R@5 | R@10 | N@5 | N@10 | valid N@10 | invalid (unconstrained) | users/s | peak MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for phase, mode in PHASES:
        s = summary[f"{phase}-{mode}"]
        cells = " | ".join(f"{s[k]['mean']:.4f} ± {s[k]['std']:.4f}" for k in REPORTED)
        lines.append(
            f"| {phase} | {mode} | {cells} | {s['valid_ndcg_at_10']['mean']:.4f} ± {s['valid_ndcg_at_10']['std']:.4f}"
            f" | {s['invalid_share']['mean']:.1%} | {s['inference_users_per_s']['mean']:.0f} | "
            f"{s['peak_memory_mb']['mean']:.0f} |"
        )
    lines += gr_rows(dataset)
    t, g = summary["train_seconds"], summary["grpo_reward"]
    lines += [
        "",
        "Training seconds per phase (mean over seeds): "
        + ", ".join(
            f"{k.removeprefix('train_sidreasoner_').removeprefix('sidreasoner_')} {v['mean']:.0f}" for k, v in t.items()
        ),
        f"GRPO mean reward: first step {g['reward_first']['mean']:.4f}, last step {g['reward_last']['mean']:.4f}, "
        f"over all steps {g['reward_mean']['mean']:.4f} (± {g['reward_mean']['std']:.4f} over seeds).",
        "invalid (unconstrained): share of users whose greedy answer, without the constrained search, names no "
        "real item; every list itself holds only real, unique items.",
    ]
    return "\n".join(lines) + "\n"


def log_to_mlflow(results: list[dict], config_path: Path) -> None:
    for r in results:
        metrics = {
            f"{p['phase']}-{p['mode']}.{k}": v
            for p in r["phases"]
            for k, v in {
                **{f"test.{m}": p["test"][m] for m in REPORTED},
                "valid.ndcg_at_10": p["valid_ndcg_at_10"],
                "invalid_share": p["invalid_share"],
                "inference_users_per_s": p["inference_users_per_s"],
            }.items()
        }
        metrics |= {f"train_seconds.{k}": v for k, v in r["train_seconds"].items()}
        metrics |= {f"grpo.{k}": v for k, v in r["grpo"].items() if isinstance(v, int | float)}
        log_run(
            f"sidreasoner-seed{r['seed']}",
            {"model": "sidreasoner", "seed": str(r["seed"]), "device": r["device"], "benchmark": config_path.name},
            metrics,
            {"sidreasoner.config": json.dumps(r["config"])[:6000]},
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "config", type=Path, help="a GR benchmark config: its dataset and SIDs (bench/configs/gr-*.yaml)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="seeds, one after another (default 0 1)")
    parser.add_argument(
        "--set",
        dest="sets",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="override params.yaml's sidreasoner section, e.g. --set grpo.prompts=256 align.max_epochs=3",
    )
    parser.add_argument("--tag", default="", help="suffix of the result files, so a probe keeps the frozen run's")
    parser.add_argument("--no-mlflow", action="store_true", help="write the result files only")
    args = parser.parse_args()
    import yaml

    config = yaml.safe_load(args.config.read_text())
    results = []
    for seed in args.seeds:
        results.append(run_seed(config, args.sets, seed))
        print(
            json.dumps(
                {
                    "seed": seed,
                    "phases": [
                        (p["phase"], p["mode"], round(p["test"]["ndcg_at_10"], 4)) for p in results[-1]["phases"]
                    ],
                }
            ),
            flush=True,
        )
    name = f"sidreasoner-{config['dataset']}{'-' + args.tag if args.tag else ''}"
    finish(
        args,
        name,
        results,
        summarise,
        lambda runs, summary: markdown(config["dataset"], runs, summary),
        lambda runs: log_to_mlflow(runs, args.config),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
