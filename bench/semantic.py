"""Semantic-foundation benchmark: plain RQ-VAE vs CoBa RQ-VAE vs RQ-KMeans on the same embeddings.

    python bench/semantic.py bench/configs/semantic-amazon-beauty.yaml

Runs the pipeline's own stages in bench/work/<dataset>/: embed (re-encoding from scratch, so
its time is real) and cooccur once, then codebook + sids for every variant. Writes per-level
utilisation, perplexity, collision rate and each stage's wall time to
bench/results/semantic-<dataset>.{json,md} (plus each variant's code-usage plot), and logs
one MLflow run per variant to the experiment "s2gr-bench".
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, log_run, override, prepare

from s2gr_core.config import Params
from s2gr_core.stages import get_stage


def timed(name: str, params: Params, work: Path) -> tuple[float, dict]:
    started = time.perf_counter()
    result = get_stage(name).run(params, work)
    seconds = time.perf_counter() - started
    print(f"[{name}] {seconds:.1f}s: {result.summary}", flush=True)
    return seconds, result.metrics


def markdown(dataset: str, shared: dict[str, float], rows: list[dict], levels: int) -> str:
    head = ["variant"]
    head += [f"util L{i}" for i in range(1, levels + 1)] + [f"ppl L{i}" for i in range(1, levels + 1)]
    head += ["collisions", "largest group", "recon err", "codebook s", "sids s", "4 stages s"]
    lines = [
        f"# Semantic foundation on {dataset} ({platform.machine()}, {os.cpu_count()} cores, CPU)",
        "",
        f"Shared stages: embed {shared['embed']:.1f}s, cooccur {shared['cooccur']:.1f}s.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in rows:
        m = r["metrics"]
        cells = [r["variant"]]
        cells += [f"{m[f'l{i}_utilisation']:.2%}" for i in range(1, levels + 1)]
        cells += [f"{m[f'l{i}_perplexity']:.1f}" for i in range(1, levels + 1)]
        cells += [f"{m['collision_rate']:.2%}", str(m["largest_collision_group"]), f"{m['recon_error']:.3f}"]
        cells += [f"{r['codebook_s']:.1f}", f"{r['sids_s']:.1f}", f"{r['total_s']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path, help="frozen benchmark config (bench/configs/semantic-*.yaml)")
    parser.add_argument("--variants", nargs="+", help="run only these variants of the config")
    parser.add_argument("--reuse-embeddings", action="store_true", help="do not re-encode (times embed as a reuse)")
    args = parser.parse_args()
    config = yaml.safe_load(args.config.read_text())
    dataset = config["dataset"]
    work, params = prepare(dataset)
    params = override(params, config.get("overrides", {}))
    if not args.reuse_embeddings:
        shutil.rmtree(work / "data" / "embed", ignore_errors=True)
    shared = {name: timed(name, params, work)[0] for name in ("embed", "cooccur")}
    rows = []
    RESULTS.mkdir(parents=True, exist_ok=True)
    for variant, sections in config["variants"].items():
        if args.variants and variant not in args.variants:
            continue
        vparams = override(params, sections)
        shutil.rmtree(work / "data" / "sids", ignore_errors=True)  # SID stability is not compared across variants
        codebook_s, metrics = timed("codebook", vparams, work)
        sids_s, sids_metrics = timed("sids", vparams, work)
        plot = RESULTS / f"semantic-{dataset}-{variant}-usage.png"
        shutil.copy(work / "reports" / "codebook_usage.png", plot)
        row = {
            "variant": variant,
            "metrics": metrics,
            "sids": sids_metrics,
            "codebook_s": codebook_s,
            "sids_s": sids_s,
            "total_s": shared["embed"] + shared["cooccur"] + codebook_s + sids_s,
            "params": {**vparams.section("codebook"), "sids.clusters": vparams.sids.clusters},
        }
        rows.append(row)
        log_run(
            f"semantic-{dataset}-{variant}",
            {"dataset": dataset, "variant": variant, "benchmark": args.config.name, "device": "cpu"},
            {
                **{k: v for k, v in metrics.items() if isinstance(v, int | float)},
                "embed_seconds": shared["embed"],
                "cooccur_seconds": shared["cooccur"],
                "codebook_seconds": codebook_s,
                "sids_seconds": sids_s,
                "four_stages_seconds": row["total_s"],
            },
            {f"codebook.{k}": v for k, v in row["params"].items()},
            [plot],
        )
    table = markdown(dataset, shared, rows, params.codebook.levels)
    (RESULTS / f"semantic-{dataset}.md").write_text(table)
    (RESULTS / f"semantic-{dataset}.json").write_text(json.dumps({"shared": shared, "variants": rows}, indent=2))
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
