"""Data-parallel training throughput: the same global batches on 1 process and on N torchrun ranks.

    python bench/ddp_throughput.py ml-100k --worlds 1 2 --batches 40
    python bench/ddp_throughput.py amazon-beauty --models tiger s2gr --worlds 1 2 4 --device cuda

Each (model, world size) is one ``torchrun --standalone --nproc-per-node W`` launch of this script
(``--worker``), whose ranks build the pipeline's own trainer (``GRTrainer`` / ``SASRecTrainer``: DDP
with gloo on CPUs, NCCL on GPUs, the global batch split between the ranks) and time
``trainer.epoch`` on its first ``--batches`` batches after ``--warmup`` untimed ones. On a CPU each
rank gets ``cores / W`` threads, so every row uses the whole machine. Rows take turns (all models and
world sizes, then again, ``--repeats`` times) and report their median round with the CPU seconds of
rank 0 per sample.

Model sizes: bench/configs/gr-<dataset>.yaml (TIGER; S2GR its ``s2gr`` variant) and
bench/configs/sasrec-<dataset>.yaml, SIDs built by the pipeline's own stages as bench/gr.py does.
Writes bench/results/ddp-throughput-<dataset>[-<device>].{json,md} and one MLflow run in "s2gr-bench".
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, ROOT, device_label, load_config, log_run, prepare, write_results  # noqa: I001  (sets up the env first)

import numpy as np

from s2gr_core.models.distributed import core_share

MODELS = ("tiger", "s2gr", "sasrec")


def configs(dataset: str) -> tuple[dict, dict]:
    gr = load_config(ROOT / "bench" / "configs" / f"gr-{dataset}.yaml", [], "model")
    sasrec_path = ROOT / "bench" / "configs" / f"sasrec-{dataset}.yaml"
    return gr, load_config(sasrec_path, [], "sasrec")["sasrec"] if sasrec_path.is_file() else {}


def worker(args: argparse.Namespace) -> None:
    """One rank: build the trainer, warm up, time the epoch loop; rank 0 writes the row to ``--out``."""
    import torch
    from gr import build_sids

    from s2gr_core.models.gr.train import GRTrainer
    from s2gr_core.models.runtime import dist_backend, runtime_for
    from s2gr_core.models.sasrec.train import SASRecTrainer
    from s2gr_core.split import load_train
    from s2gr_core.stages.generative import load_semantic

    gr_config, sasrec_config = configs(args.dataset)
    work, params = prepare(args.dataset)
    users, sequences = load_train(str(work / "data" / "split" / "train.parquet"))
    n_items = int(json.loads((work / "metrics" / "data.json").read_text())["items"])
    common = {"batch_size": args.batch_size, "device": args.device, "threads": 0, "max_epochs": 1}
    if args.model == "sasrec":
        cfg = replace(params.sasrec, **{**sasrec_config, **common})
        runtime = runtime_for(cfg.device, cfg.threads, cfg.precision, cfg.compile)
        trainer = SASRecTrainer(cfg, sequences, n_items, params.split.max_history, runtime)
    else:
        build_sids(gr_config)  # already built by the parent: only checks the stamp
        variant = {k: v for k, v in gr_config["variants"][args.model].items() if k != "mode"}
        cfg = replace(getattr(params, args.model), **{**gr_config["model"], **variant, **common})
        runtime = runtime_for(cfg.device, cfg.threads, cfg.precision, cfg.compile)
        sem = load_semantic(work / "data" / "sids", n_items)
        trainer = GRTrainer(cfg, args.model, sem, users, sequences, params.split.max_history, runtime)
    world = runtime.world
    rng = np.random.default_rng(args.seed)
    trainer.model.train()
    trainer.epoch(0, rng, max_batches=args.warmup, progress=False)
    sync = torch.cuda.synchronize if runtime.device.type == "cuda" else lambda: None
    sync()
    world.barrier()
    cpu, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    result = trainer.epoch(1, rng, max_batches=args.batches, progress=False)
    sync()
    world.barrier()
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu_seconds = (after.ru_utime + after.ru_stime) - (cpu.ru_utime + cpu.ru_stime)
    if world.main:
        row = {
            "model": args.model,
            "world_size": world.size,
            "threads_per_rank": runtime.threads,
            "samples": result.samples,
            "seconds": seconds,
            "train_samples_per_s": result.samples / seconds,
            "rank0_cpu_s_per_1k_samples": 1000 * cpu_seconds / result.samples,
            "loss": result.losses["loss"],
            "parameters": sum(p.numel() for p in trainer.model.parameters()),
            "device": device_label(str(runtime.device)),
            "backend": dist_backend(),
        }
        Path(args.out).write_text(json.dumps(row))


def launch(args: argparse.Namespace, model: str, world: int, out: Path) -> dict:
    """One torchrun launch of the worker; its row."""
    logs = out.with_name(out.stem + "-logs")  # torchrun's error files
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={world}"]
    torchrun.append(f"--log-dir={logs}")
    cmd = [*torchrun, __file__, args.dataset, "--worker", "--model", model, "--out", str(out)]
    for name in ("batches", "warmup", "batch_size", "device", "seed"):
        cmd += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    env = {**os.environ, "OMP_NUM_THREADS": str(core_share(world))}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{model} on {world} ranks failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    shutil.rmtree(logs, ignore_errors=True)
    return json.loads(out.read_text())


def markdown(report: dict) -> str:
    lines = [
        f"DDP training throughput, {report['dataset']}, {report['device']}, global batch {report['batch_size']}, "
        f"{report['batches']} timed batches, median of {report['repeats']} rounds",
        "",
        "| model | ranks | threads/rank | samples/s | vs 1 rank | rank-0 CPU s / 1k samples | parameters |",
        "|---|---|---|---|---|---|---|",
    ]
    base = {r["model"]: r["train_samples_per_s"] for r in report["rows"] if r["world_size"] == 1}
    for r in report["rows"]:
        ratio = f"{r['train_samples_per_s'] / base[r['model']]:.2f}×" if r["model"] in base else "–"
        lines.append(
            f"| {r['model']} | {r['world_size']} | {r['threads_per_rank']} | {r['train_samples_per_s']:,.0f} | {ratio} "
            f"| {r['rank0_cpu_s_per_1k_samples']:.2f} | {r['parameters']:,} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--worlds", nargs="+", type=int, default=[1, 2], help="world sizes (ranks on this machine)")
    parser.add_argument("--batches", type=int, default=40, help="timed global batches per row")
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches first")
    parser.add_argument("--batch-size", type=int, default=256, help="the global batch")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of every row, interleaved")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (one GPU per rank)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tag", default="", help="suffix of the result files")
    parser.add_argument("--no-mlflow", action="store_true", help="write the result files only")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", choices=MODELS, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return 0

    from gr import build_sids

    gr_config, _ = configs(args.dataset)
    prepare(args.dataset)
    if {"tiger", "s2gr"} & set(args.models):
        build_sids(gr_config)
    RESULTS.mkdir(parents=True, exist_ok=True)
    rounds: dict[tuple[str, int], list[dict]] = {}
    for repeat in range(args.repeats):
        for model in args.models:
            for world in args.worlds:
                row = launch(args, model, world, RESULTS / f".ddp-{model}-{world}.json")
                rounds.setdefault((model, world), []).append(row)
                print(f"round {repeat + 1}: {model} × {world}: {row['train_samples_per_s']:,.0f} samples/s", flush=True)
    rows = []
    for (model, world), runs in rounds.items():
        median = sorted(runs, key=lambda r: r["train_samples_per_s"])[len(runs) // 2]
        rows.append({**median, "rounds_samples_per_s": [r["train_samples_per_s"] for r in runs]})
        (RESULTS / f".ddp-{model}-{world}.json").unlink(missing_ok=True)
    report = {
        "dataset": args.dataset,
        "device": rows[0]["device"],
        "batch_size": args.batch_size,
        "batches": args.batches,
        "repeats": args.repeats,
        "rows": rows,
    }
    suffix = ("" if args.device == "cpu" else f"-{args.device}") + (f"-{args.tag}" if args.tag else "")
    paths = write_results(f"ddp-throughput-{args.dataset}{suffix}", report, markdown(report))
    if not args.no_mlflow:
        metrics = {f"{r['model']}_w{r['world_size']}_samples_per_s": r["train_samples_per_s"] for r in rows}
        params = {"dataset": args.dataset, "batch_size": args.batch_size, "batches": args.batches}
        log_run(f"ddp-throughput-{args.dataset}", {"bench": "ddp_throughput", "device": report["device"]}, metrics,
                params, paths)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
