"""Training and decoding throughput of TIGER, S2GR and SASRec under each speed switch, in one run.

    python bench/gr_throughput.py amazon-beauty --batches 20 --users 4096
    python bench/gr_throughput.py amazon-beauty --configs eager-fp32 buckets-bf16 --modes tiger s2gr
    python bench/gr_throughput.py amazon-beauty --device cuda --matmul-precision high --batches 200

What is timed is the pipeline's own code: ``GRTrainer.epoch`` / ``SASRecTrainer.epoch`` (gradient
clipping, schedule, device-side loss sums and their reads included) for ``--batches`` batches of
``--batch-size``, and the pipeline's ``predict`` of ``--users`` random validation users at beam 20
in calls of ``--decode-batch`` users (params.yaml ``inference.batch_size``). Warm-up steps and
decodes (every crop width, so compiled graphs exist) come first and are not timed. Every row is
timed ``--repeats`` times, the rows taking turns (A B A B …), and reports its median round: on a
shared VM one row timed once swung by a third between runs (S2GR/TIGER bf16 training 1.27-1.52).

SIDs: the CoBa RQ-VAE SIDs of bench/configs/gr-amazon-beauty.yaml (built once into bench/work/ by
the pipeline's own semantic stages, as bench/gr.py does); the model size is that config's ``model``
(the paper's: 4+4 layers, d_model 128, 6 x 64 heads, FFN 1024), SASRec's is
bench/configs/sasrec-<dataset>.yaml.

FLOPs are counted with ``torch.utils.flop_counter`` on the batches that were timed (executed: what
the config computes; useful: the same batches cropped to their longest history). Peak memory is the
GPU allocator's peak, or on a CPU the process's resident high-water mark reset before each row.

Writes bench/results/gr-throughput-<dataset>[-<device>].{json,md} (``{"rows": [{"mode",
"merge_codes", "config", "train_samples_per_s", "decode_users_per_s", ...}]}``; ``config``
names the switches, ``eager-fp32`` being the path without any) and one MLflow run in "s2gr-bench".
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, device_label, load_config, log_run, prepare, write_results  # noqa: I001  (sets up the env first)

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from gr import build_sids, semantic_params
from s2gr_core.models.common import peak_memory_mb, reset_peak_memory
from s2gr_core.models.gr.train import GRTrainer
from s2gr_core.models.gr.train import predict as gr_predict
from s2gr_core.models.runtime import Runtime, runtime_for
from s2gr_core.models.sasrec.train import SASRecTrainer
from s2gr_core.models.sasrec.train import predict as sasrec_predict
from s2gr_core.split import load_eval, load_train
from s2gr_core.stages.generative import load_semantic

# name -> the params.yaml switches it sets; "eager-fp32" is the path with none of them
CONFIGS: dict[str, dict[str, Any]] = {
    "eager-fp32": {"length_buckets": False, "precision": "fp32", "compile": False},
    "buckets-fp32": {"length_buckets": True, "precision": "fp32", "compile": False},
    "buckets-bf16": {"length_buckets": True, "precision": "bf16", "compile": False},
    "buckets-fp32-compile": {"length_buckets": True, "precision": "fp32", "compile": True},
    "buckets-bf16-compile": {"length_buckets": True, "precision": "bf16", "compile": True},
}
DEFAULT_CONFIGS = ["eager-fp32", "buckets-fp32", "buckets-bf16", "buckets-bf16-compile"]
BEAM, TOP_K = 20, 10
# the rates the S2GR/TIGER table divides, in its column order
RATES = ("train_samples_per_s", "train_samples_per_cpu_s", "decode_users_per_s", "decode_users_per_cpu_s")
MODEL_SHAPE = ("encoder_layers", "decoder_layers", "d_model", "heads", "head_dim", "ffn")  # reported


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so a timer reads the work and not its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_usage() -> np.ndarray:
    """[user + system CPU seconds, minor page faults] of this process so far (every thread).

    Wall time on a shared or virtual machine swings with what else runs (this project's VM shows
    a third of its time stolen); CPU time does not, so the rows report both."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return np.array([usage.ru_utime + usage.ru_stime, usage.ru_minflt], dtype=float)


def counted_flops(fn: Callable[[], Any]) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def one_per_width(batches: list[np.ndarray], width: Callable[[np.ndarray], int]) -> dict[int, np.ndarray]:
    """The first batch of each crop width (warm-up: every compiled shape; FLOPs: one count each)."""
    found: dict[int, np.ndarray] = {}
    for idx in batches:
        found.setdefault(width(idx), idx)
    return found


Decode = Callable[[np.ndarray, int, Runtime], Any]  # (rows of the decoded users, users per call, runtime)


class Bench:
    """One model under one config: its trainer, and its pipeline decoding call."""

    def __init__(self, trainer: GRTrainer | SASRecTrainer, decode: Decode):
        self.trainer, self.decode = trainer, decode

    def width(self, idx: np.ndarray, crop: bool | None = None) -> int:
        return int(self.trainer.batch(idx, crop)[0].shape[1])

    @property
    def parameters(self) -> int:
        return sum(p.numel() for p in self.trainer.model.parameters())

    def train_flops(self, batches: list[np.ndarray], crop: bool | None) -> float:
        """FLOPs of forward + backward on ``batches``: counted once per width on the batch's 32 longest
        examples (same crop), scaled by batch size."""
        trainer, lengths = self.trainer, self.trainer.lengths
        per_sample = {}
        for w, idx in one_per_width(batches, lambda b: self.width(b, crop)).items():
            probe = idx[np.argsort(lengths[idx], kind="stable")[-32:]]
            backward = lambda p=probe: trainer.losses(*trainer.batch(p, crop))["loss"].backward()  # noqa: E731
            per_sample[w] = counted_flops(backward) / len(probe)
        trainer.optim.zero_grad(set_to_none=True)
        return sum(len(b) * per_sample[self.width(b, crop)] for b in batches)


def warm_up(bench: Bench, args: argparse.Namespace, lengths: np.ndarray) -> None:
    """Untimed training steps and decodes (every crop width when compiling, so the graphs exist)."""
    trainer = bench.trainer
    runtime = trainer.runtime
    trainer.model.train()
    warm = one_per_width(trainer.batches(np.random.default_rng(args.seed + 1)), bench.width)
    for idx in list(warm.values())[: None if runtime.compile else 2]:
        trainer.step(idx)
    trainer.model.eval()
    order = np.argsort(lengths, kind="stable")
    bench.decode(order[:: max(1, len(order) // 64)], 16, runtime)  # short to long chunks
    if runtime.compile:
        bench.decode(order[: args.decode_batch], args.decode_batch, runtime)
    sync(runtime.device)


def timed_round(bench: Bench, args: argparse.Namespace, lengths: np.ndarray) -> dict[str, float]:
    """One timing of training (``--batches`` batches, the same ones every round) and of decoding."""
    trainer = bench.trainer
    runtime, device = trainer.runtime, trainer.runtime.device
    trainer.model.train()
    reset_peak_memory(device)
    started, cpu = time.perf_counter(), cpu_usage()
    result = trainer.epoch(1, np.random.default_rng(args.seed), max_batches=args.batches, progress=False)
    sync(device)
    train_s, (train_cpu, train_faults) = time.perf_counter() - started, cpu_usage() - cpu
    train_peak = peak_memory_mb(device)
    trainer.model.eval()
    reset_peak_memory(device)
    started, cpu = time.perf_counter(), cpu_usage()
    bench.decode(np.arange(len(lengths)), args.decode_batch, runtime)
    sync(device)
    decode_s, (decode_cpu, decode_faults) = time.perf_counter() - started, cpu_usage() - cpu
    users = len(lengths)
    return {
        "train_samples_per_s": result.samples / train_s,
        "decode_users_per_s": users / decode_s,
        "train_samples_per_cpu_s": result.samples / train_cpu,
        "decode_users_per_cpu_s": users / decode_cpu,
        "train_peak_memory_mb": train_peak,
        "decode_peak_memory_mb": peak_memory_mb(device),
        "train_loss": result.losses["loss"],
        "train_samples": result.samples,
        "train_seconds": train_s,
        "decode_seconds": decode_s,
        "train_cpu_seconds": train_cpu,
        "decode_cpu_seconds": decode_cpu,
        "train_minor_faults": int(train_faults),
        "decode_minor_faults": int(decode_faults),
    }


def counted(bench: Bench, args: argparse.Namespace, lengths: np.ndarray) -> dict[str, float]:
    """FLOPs of the timed work: training executed (as configured) and useful (no padding), decoding per user."""
    trainer = bench.trainer
    timed = trainer.batches(np.random.default_rng(args.seed))[: args.batches]  # what each round's epoch() draws
    # useful: the same examples regrouped by length and cropped, i.e. with no padding left to compute
    by_length = np.concatenate(timed)[np.argsort(trainer.lengths[np.concatenate(timed)], kind="stable")]
    size = trainer.cfg.batch_size
    regrouped = [by_length[i : i + size] for i in range(0, len(by_length), size)]
    executed, useful = bench.train_flops(timed, None), bench.train_flops(regrouped, True)
    trainer.model.eval()
    order = np.argsort(lengths, kind="stable")
    sub = order[:: args.flop_stride]  # every k-th user by length: the same mix of crops, eagerly
    eager = replace(trainer.runtime, compile=False)
    decode_flops = counted_flops(lambda: bench.decode(sub, max(1, args.decode_batch // args.flop_stride), eager))
    return {
        "executed": executed,
        "useful": useful,
        "samples": sum(len(b) for b in timed),
        "decode": decode_flops * len(lengths) / len(sub),
    }


PER_ROUND = ("train_samples_per_s", "decode_users_per_s", "train_samples_per_cpu_s", "decode_users_per_cpu_s")


def summarise(rounds: list[dict[str, float]], flops: dict[str, float], users: int, args: argparse.Namespace) -> dict:
    """One row: the median of the rounds (each figure's own median), the highest peaks, and each round's
    rates under ``<rate>_runs``; GFLOP/s are taken at the median rates."""
    median = {key: float(np.median([r[key] for r in rounds])) for key in rounds[0]}
    train_s = median["train_samples"] / median["train_samples_per_s"]
    decode_s = users / median["decode_users_per_s"]
    row = {
        **median,
        "train_peak_memory_mb": max(r["train_peak_memory_mb"] for r in rounds),
        "decode_peak_memory_mb": max(r["decode_peak_memory_mb"] for r in rounds),
        "train_minor_faults": int(median["train_minor_faults"]),
        "decode_minor_faults": int(median["decode_minor_faults"]),
        "train_gflop_per_sample": flops["executed"] / 1e9 / flops["samples"],
        "train_gflops": flops["executed"] / 1e9 / train_s,
        "train_useful_gflops": flops["useful"] / 1e9 / train_s,
        "train_fraction_of_peak": flops["executed"] / 1e9 / train_s / args.peak_gflops,
        "decode_gflop_per_user": flops["decode"] / 1e9 / users,
        "decode_gflops": flops["decode"] / 1e9 / decode_s,
        "decode_fraction_of_peak": flops["decode"] / 1e9 / decode_s / args.peak_gflops,
        "rounds": len(rounds),
        **{f"{key}_runs": [r[key] for r in rounds] for key in PER_ROUND},
    }
    del row["train_samples"]
    return row


def measure_all(benches: list[Bench], args: argparse.Namespace, lengths: np.ndarray) -> list[dict]:
    """Rows for several benches timed in turn, ``args.repeats`` rounds of each, interleaved (A B A B …):
    a slow stretch of a shared machine then lands on every bench alike, not on one row."""
    for bench in benches:
        warm_up(bench, args, lengths)
    rounds: list[list[dict[str, float]]] = [[] for _ in benches]
    for _ in range(args.repeats):
        for bench, own in zip(benches, rounds, strict=True):
            own.append(timed_round(bench, args, lengths))
    return [
        {**summarise(own, counted(b, args, lengths), len(lengths), args), "parameters": b.parameters}
        for b, own in zip(benches, rounds, strict=True)
    ]


def measure(bench: Bench, args: argparse.Namespace, lengths: np.ndarray) -> dict:
    """Train and decode rates, FLOPs and peak memory of one model under one config."""
    return measure_all([bench], args, lengths)[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset")
    parser.add_argument("--batches", type=int, default=20, help="timed training batches per row")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="timed rounds of every row, interleaved (A B A B ...); rows give the median round",
    )
    parser.add_argument("--users", type=int, default=4096, help="validation users decoded per row (random)")
    parser.add_argument("--decode-batch", type=int, help="users per decoding call (default: inference.batch_size)")
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=DEFAULT_CONFIGS)
    parser.add_argument("--modes", nargs="+", choices=["tiger", "s2gr", "sasrec"], default=["tiger", "s2gr", "sasrec"])
    parser.add_argument(
        "--merge-codes", choices=["false", "true", "both"], default="false", help="GR encoder tokens: per code or item"
    )
    parser.add_argument("--device", default="auto", help="auto (a GPU when one is visible), cpu or cuda")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    parser.add_argument("--matmul-precision", default="highest", help="torch.set_float32_matmul_precision (high: TF32)")
    parser.add_argument(
        "--peak-gflops",
        type=float,
        default=195.0,
        help="the device's fp32 peak, for the fraction of peak (default: this project's 2-core CPU, ≈195)",
    )
    parser.add_argument("--flop-stride", type=int, default=16, help="decoding FLOPs are counted on every k-th user")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gr-config", type=Path, default=ROOT / "bench" / "configs" / "gr-amazon-beauty.yaml")
    parser.add_argument("--tag", default="", help="suffix of the result files")
    parser.add_argument("--no-mlflow", action="store_true", help="write the result files only")
    args = parser.parse_args()
    torch.set_float32_matmul_precision(args.matmul_precision)

    gr_config = load_config(args.gr_config, [], "model")
    if gr_config["dataset"] != args.dataset:
        raise SystemExit(f"--gr-config {args.gr_config} is for {gr_config['dataset']}, not {args.dataset}")
    sasrec_path = ROOT / "bench" / "configs" / f"sasrec-{args.dataset}.yaml"
    sasrec_config = load_config(sasrec_path, [], "sasrec")["sasrec"] if sasrec_path.is_file() else {}
    work, params = prepare(args.dataset)
    if {"tiger", "s2gr"} & set(args.modes):
        build_sids(gr_config)
    n_items = int(json.loads((work / "metrics" / "data.json").read_text())["items"])
    train_users, sequences = load_train(str(work / "data" / "split" / "train.parquet"))
    valid_users, valid_hist, _ = load_eval(str(work / "data" / "split" / "valid.parquet"))
    pick = np.sort(np.random.default_rng(args.seed).permutation(len(valid_hist))[: args.users])
    users, histories = valid_users[pick], [valid_hist[i] for i in pick]
    decode_batch = args.decode_batch or params.inference.batch_size
    args.decode_batch = decode_batch
    max_history = params.split.max_history
    sem = load_semantic(work / "data" / "sids", n_items) if {"tiger", "s2gr"} & set(args.modes) else None
    merges = {"false": [False], "true": [True], "both": [False, True]}[args.merge_codes]
    common = {"batch_size": args.batch_size, "device": args.device, "threads": args.threads}

    rows, benches = [], []
    for mode in args.modes:
        for merge in merges if mode != "sasrec" else [None]:
            for name in args.configs:
                switches = CONFIGS[name]
                if mode == "sasrec":
                    cfg = replace(params.sasrec, **{**sasrec_config, **common, **switches})
                    runtime = runtime_for(cfg.device, cfg.threads, cfg.precision, cfg.compile)
                    trainer: GRTrainer | SASRecTrainer = SASRecTrainer(cfg, sequences, n_items, max_history, runtime)
                    decode = sasrec_decoder(trainer, histories, cfg.length_buckets)
                else:
                    model = {**gr_config["model"], "merge_codes": merge, "max_epochs": 1}
                    cfg = replace(getattr(params, mode), **{**model, **common, **switches})
                    runtime = runtime_for(cfg.device, cfg.threads, cfg.precision, cfg.compile)
                    trainer = GRTrainer(cfg, mode, sem, train_users, sequences, max_history, runtime)
                    decode = gr_decoder(trainer, sem, users, histories, cfg.length_buckets)
                row = {"mode": mode, "merge_codes": merge, "config": name, **switches}
                rows.append({**row, "precision_used": runtime.precision})
                benches.append(Bench(trainer, decode))
    for row, measured in zip(rows, measure_all(benches, args, np.array([len(h) for h in histories])), strict=True):
        row.update(measured)
        print(json.dumps(row), flush=True)

    device = runtime.device
    report = {
        "dataset": args.dataset,
        "device": device_label(str(device)),
        "threads": runtime.threads,
        "runtime": runtime.tags(),
        "sids": describe_sids(sem, gr_config, args.gr_config) if sem is not None else None,
        "gr_config": str(args.gr_config),
        "model": {k: gr_config["model"][k] for k in MODEL_SHAPE},
        "batch_size": args.batch_size,
        "batches": args.batches,
        "repeats": args.repeats,
        "users": len(histories),
        "decode_batch": decode_batch,
        "beam": BEAM,
        "peak_gflops": args.peak_gflops,
        "matmul_precision": args.matmul_precision,
        "rows": rows,
    }
    suffix = ("" if device.type == "cpu" else f"-{device.type}") + (f"-{args.tag}" if args.tag else "")
    paths = write_results(f"gr-throughput-{args.dataset}{suffix}", report, markdown(report))
    if not args.no_mlflow:
        log_to_mlflow(report, paths)
    return 0


def gr_decoder(trainer: GRTrainer, sem: Any, users: np.ndarray, histories: list[np.ndarray], buckets: bool) -> Decode:
    def decode(rows: np.ndarray, batch: int, runtime: Runtime) -> Any:
        hist = [histories[i] for i in rows]
        return gr_predict(trainer.model, hist, users[rows], sem, BEAM, TOP_K, batch, runtime.device, runtime, buckets)

    return decode


def sasrec_decoder(trainer: SASRecTrainer, histories: list[np.ndarray], buckets: bool) -> Decode:
    def decode(rows: np.ndarray, batch: int, runtime: Runtime) -> Any:
        hist = [histories[i] for i in rows]
        return sasrec_predict(trainer.model, hist, TOP_K, False, batch, runtime.device, runtime, buckets)

    return decode


def describe_sids(sem: Any, gr_config: dict, config_path: Path) -> dict:
    """Which SIDs the GR rows used: the codebook section they were built with, and their shape."""
    codebook = semantic_params(gr_config)[1].codebook
    return {
        "source": f"bench/work/{gr_config['dataset']}/data/sids, the semantic section of {config_path.name}",
        "codebook": {
            k: getattr(codebook, k) for k in ("tokenizer", "levels", "codebook_size", "latent_dim", "load_balance")
        },
        "positions": int(sem.sids.shape[1]),
        "vocab": [int(v) for v in sem.sids.max(axis=0) + 1],
        "cluster_dim": int(sem.centroids.shape[-1]),
    }


def markdown(report: dict) -> str:
    rows, sids = report["rows"], report["sids"]
    sid_text = (
        f"{sids['codebook'].get('tokenizer', '?')} SIDs, vocab {sids['vocab']}, cluster dim {sids['cluster_dim']}"
        if sids
        else "no SIDs"
    )
    lines = [
        f"# Training and decoding throughput on {report['dataset']}: {report['device']}, {report['threads']} threads",
        "",
        f"Batch {report['batch_size']} x {report['batches']} timed batches; decoding {report['users']} validation "
        f"users at beam {report['beam']} in calls of {report['decode_batch']}; {sid_text}; GR model of "
        f"{Path(report['gr_config']).name} {report['model']}. Fraction of peak: executed FLOPs / "
        f"{report['peak_gflops']:.0f} GFLOP/s. CPU peak memory is the resident high-water mark, so it includes "
        "memory the allocator kept from earlier rows. Per CPU-s: the same work over the process's user + system "
        "CPU time (getrusage), which steal time and other processes do not inflate; x eager compares those.",
        "",
        "| mode | tokens | config | train samples/s | per CPU-s | x eager | decode users/s | per CPU-s | x eager "
        "| train GFLOP/s (useful) | % peak | decode GFLOP/s | peak MB (train/decode) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    base = {(r["mode"], r["merge_codes"]): r for r in rows if r["config"] == "eager-fp32"}
    for r in rows:
        b = base.get((r["mode"], r["merge_codes"]))
        tokens = "-" if r["merge_codes"] is None else ("per item" if r["merge_codes"] else "per code")
        gain_t = f"{r['train_samples_per_cpu_s'] / b['train_samples_per_cpu_s']:.2f}" if b else "-"
        gain_d = f"{r['decode_users_per_cpu_s'] / b['decode_users_per_cpu_s']:.2f}" if b else "-"
        lines.append(
            f"| {r['mode']} | {tokens} | {r['config']} | {r['train_samples_per_s']:.0f} | "
            f"{r['train_samples_per_cpu_s']:.0f} | {gain_t} | {r['decode_users_per_s']:.0f} | "
            f"{r['decode_users_per_cpu_s']:.0f} | {gain_d} | "
            f"{r['train_gflops']:.0f} ({r['train_useful_gflops']:.0f}) | {100 * r['train_fraction_of_peak']:.0f} | "
            f"{r['decode_gflops']:.0f} | "
            f"{r['train_peak_memory_mb']:.0f} / {r['decode_peak_memory_mb']:.0f} |"
        )
    ratios = []
    for config in dict.fromkeys(r["config"] for r in rows):
        for merge in dict.fromkeys(r["merge_codes"] for r in rows if r["merge_codes"] is not None):
            pair = {r["mode"]: r for r in rows if r["config"] == config and r["merge_codes"] == merge}
            if {"tiger", "s2gr"} <= set(pair):
                t, s = pair["tiger"], pair["s2gr"]
                ratios.append(
                    f"| {config} | {'per item' if merge else 'per code'} | "
                    + " | ".join(paired_ratio(t, s, k) for k in RATES)
                    + " |"
                )
    if ratios:
        lines += ["", "S2GR/TIGER time per sample or user: the median of the rounds' ratios (their range)."]
        header = "| config | tokens | S2GR/TIGER train time, wall | CPU | S2GR/TIGER decode time, wall | CPU |"
        lines += ["", header, "|---|---|---|---|---|---|"]
        lines += ratios
    return "\n".join(lines) + "\n"


def paired_ratio(tiger: dict, s2gr: dict, rate: str) -> str:
    """TIGER's rate over S2GR's (S2GR's time over TIGER's), round by round: the rounds ran interleaved,
    so each ratio compares two timings taken minutes apart.
    Example: TIGER's rates [10, 12], S2GR's [8, 8] -> "1.38 (1.25-1.50)"."""
    runs = [
        a / b
        for a, b in zip(tiger.get(f"{rate}_runs", [tiger[rate]]), s2gr.get(f"{rate}_runs", [s2gr[rate]]), strict=True)
    ]
    text = f"{float(np.median(runs)):.2f}"
    return text + (f" ({min(runs):.2f}-{max(runs):.2f})" if len(runs) > 1 else "")


def log_to_mlflow(report: dict, artifacts: list[Path]) -> None:
    metrics = {
        f"{r['mode']}{'' if r['merge_codes'] is None else ('.item' if r['merge_codes'] else '.code')}."
        f"{r['config']}.{key}": r[key]
        for r in report["rows"]
        for key in (*RATES, "train_gflops", "train_peak_memory_mb")
    }
    params = {k: report[k] for k in ("batch_size", "batches", "users", "decode_batch", "beam", "threads")}
    tags = {"bench": "gr_throughput", "dataset": report["dataset"], "device": report["device"], **report["runtime"]}
    run_id = log_run(f"gr-throughput-{report['dataset']}", tags, metrics, params, artifacts)
    print(f"MLflow run {run_id} (experiment s2gr-bench)")


if __name__ == "__main__":
    sys.exit(main())
