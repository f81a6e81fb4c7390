"""Training and decoding throughput of TIGER vs S2GR at a given size, on a dataset's real SIDs.

    python bench/gr_throughput.py amazon-beauty --batches 20
    python bench/gr_throughput.py amazon-beauty --device cuda --matmul-precision high --batches 50

Uses bench/work/<dataset>/ (run bench/semantic.py first for its SIDs). Times ``--batches``
training steps and the decoding of ``--users`` validation users at beam 20, for one token
per code and one token per item (``merge_codes``); writes bench/results/gr-throughput-<dataset>.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, device_label, prepare

from s2gr_core.models.common import resolve_device
from s2gr_core.models.gr.data import left_padded, sid_tensor, training_examples
from s2gr_core.models.gr.decoding import recommend
from s2gr_core.models.gr.losses import LossWeights, training_loss
from s2gr_core.models.gr.model import GRSpec, SeqToSID
from s2gr_core.split import load_eval, load_train
from s2gr_core.stages.generative import load_semantic

PAPER = {"d_model": 128, "heads": 6, "head_dim": 64, "ffn": 1024, "encoder_layers": 4, "decoder_layers": 4}


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so a timer reads the work and not its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_seconds(
    model: SeqToSID,
    opt: torch.optim.Optimizer,
    weights: LossWeights,
    centroids: torch.Tensor,
    clusters: torch.Tensor,
    batch: Callable[[], tuple[torch.Tensor, torch.Tensor]],
    n: int,
    device: torch.device,
) -> float:
    """Seconds for ``n`` training steps on batches drawn by ``batch()``."""
    sync(device)
    started = time.perf_counter()
    for _ in range(n):
        hist, target = batch()
        loss = training_loss(model, hist, target, weights, centroids, clusters)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    sync(device)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--users", type=int, default=256)
    parser.add_argument("--device", default="auto", help="auto (a GPU when one is visible), cpu or cuda")
    parser.add_argument("--matmul-precision", default="highest", help="torch.set_float32_matmul_precision (high: TF32)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    torch.set_float32_matmul_precision(args.matmul_precision)
    work, _ = prepare(args.dataset)
    n_items = int(json.loads((work / "metrics" / "data.json").read_text())["items"])
    sem = load_semantic(work / "data" / "sids", n_items, device)
    centroids, clusters = sem.centroids.to(device), sem.cluster_of_code.to(device)
    _, sequences = load_train(str(work / "data" / "split" / "train.parquet"))
    hist_items, targets = training_examples(sequences, 20)
    _, valid_hist, _ = load_eval(str(work / "data" / "split" / "valid.parquet"))
    rng = np.random.default_rng(0)
    rows = []
    for merge in (False, True):
        for mode in ("tiger", "s2gr"):
            spec = GRSpec(
                vocab=tuple(int(v) for v in sem.sids.max(0) + 1),
                max_history=20,
                dropout=0.1,
                mode=mode,
                merge_codes=merge,
                cluster_dim=int(sem.centroids.shape[-1]),
                **PAPER,
            )
            torch.manual_seed(0)
            model = SeqToSID(spec).to(device)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
            weights = LossWeights(0.1, 1.0, 1.0, 0.5) if mode == "s2gr" else LossWeights(1.0, 0.0, 0.0, 0.0)

            def batch() -> tuple[torch.Tensor, torch.Tensor]:
                idx = rng.integers(0, len(targets), args.batch_size)
                hist = sid_tensor(hist_items[idx], sem.sids, device)
                return hist, torch.as_tensor(sem.sids[targets[idx]], device=device)

            step = (model, opt, weights, centroids, clusters)
            train_seconds(*step, batch, 2, device)  # warm-up: allocator, kernels
            train_rate = args.batches * args.batch_size / train_seconds(*step, batch, args.batches, device)
            hist = sid_tensor(left_padded(valid_hist[: args.users], 20), sem.sids, device)
            model.eval()
            with torch.no_grad():
                recommend(model, hist[:128], sem.tables, beam=20)  # warm-up
                sync(device)
                started = time.perf_counter()
                for start in range(0, len(hist), 128):
                    recommend(model, hist[start : start + 128], sem.tables, beam=20)
                sync(device)
            decode_rate = len(hist) / (time.perf_counter() - started)
            rows.append(
                {
                    "mode": mode,
                    "merge_codes": merge,
                    "train_samples_per_s": train_rate,
                    "decode_users_per_s": decode_rate,
                    "parameters": sum(p.numel() for p in model.parameters()),
                }
            )
            print(rows[-1], flush=True)
    lines = [
        f"# TIGER vs S2GR throughput on {args.dataset} (paper size: 4+4 layers, d_model 128, 6 x 64 heads, "
        f"FFN 1024; {device_label(str(device))}, {torch.get_num_threads()} threads, "
        f"matmul precision {args.matmul_precision})",
        "",
        "| mode | encoder tokens | train samples/s | decode users/s (beam 20) | parameters |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        tokens = "20 (one per item)" if r["merge_codes"] else f"{20 * sem.sids.shape[1]} (one per code)"
        lines.append(
            f"| {r['mode']} | {tokens} | {r['train_samples_per_s']:.0f} | {r['decode_users_per_s']:.1f} | "
            f"{r['parameters']:,} |"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = "" if device.type == "cpu" else f"-{device.type}"
    (RESULTS / f"gr-throughput-{args.dataset}{suffix}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
