"""One training run of tests/test_distributed.py: as one process (``python -m tests.ddp_worker``) or as
every rank of a data-parallel run (``torchrun --nproc-per-node 2 -m tests.ddp_worker``), from the repo root.

It trains ``--family`` with the pipeline's own trainer, dropout off so that runs can be compared number
for number: SASRec, TIGER or S2GR on a project folder's split (and SIDs), or SIDReasoner's SFT loop
(``sft``) on a tiny Qwen3 LM. Rank 0 writes the weights after the last epoch (not the best ones) to
``--out`` and the loss history beside it. ``--kill-epoch N`` SIGKILLs rank 0 once epoch N has trained
and validated, before its checkpoint (torchrun then stops the other ranks): ``last.pt`` holds N - 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
from pathlib import Path

from s2gr_core.config import load_params
from s2gr_core.io import load_torch
from s2gr_core.models.training import TrainOutcome


def train_sft(args: argparse.Namespace, log) -> TrainOutcome:
    from s2gr_core.models.runtime import runtime_for
    from s2gr_core.models.sidreasoner.sft import train_phase
    from s2gr_core.models.sidreasoner.tokenizer import encode
    from tests.fixtures import tiny_lm, tiny_tokenizer

    tok = tiny_tokenizer()
    phase = load_params(args.root / "params.yaml").sidreasoner.align
    phase = dataclasses.replace(phase, batch_size=args.batch, max_epochs=args.epochs, patience=args.epochs)
    sids = [f"<a_{i % 4}><b_{i % 3}><c_{i % 2}>" for i in range(40)]
    # prompts of 1 to 10 earlier SIDs: the shares of a batch hold different numbers of trained tokens
    prompts = [f"next after {''.join(sids[i - 1 - n % 10 : i])}?" for n, i in enumerate(range(11, 40))]
    data = encode(tok, ["chat"] * len(prompts), prompts, sids[11:40], False, 256)
    return train_phase(tiny_lm(len(tok)), data, data, phase, runtime_for("cpu", 0, "fp32", False),
                       pad=tok.pad_token_id, seed=0, start="tiny", resume_dir=args.ckpt / "resume", name="align",
                       log=log)  # fmt: skip


def train(args: argparse.Namespace) -> TrainOutcome:
    from s2gr_core.models.gr.train import train_gr
    from s2gr_core.models.sasrec import train_sasrec
    from s2gr_core.split import load_eval, load_train
    from s2gr_core.stages.generative import load_semantic

    def log(row: dict[str, float], epoch: int) -> None:
        if epoch == args.kill_epoch:
            os.kill(os.getpid(), signal.SIGKILL)

    if args.family == "sft":
        return train_sft(args, log)
    root = args.root
    base = getattr(load_params(root / "params.yaml"), args.family)
    overrides = {"batch_size": args.batch, "max_epochs": args.epochs, "patience": args.epochs, "dropout": 0.0}
    if args.family == "s2gr":  # with the interest loss on, in-batch negatives must span the global batch
        overrides.update(align_weight=args.aux, interest_weight=args.aux, reg_weight=args.aux)
    cfg = dataclasses.replace(base, **overrides)
    users, sequences = load_train(str(root / "data/split/train.parquet"))
    valid = load_eval(str(root / "data/split/valid.parquet"))
    ckpt, resume = args.ckpt / "model", args.ckpt / "resume"
    if args.family == "sasrec":
        return train_sasrec(cfg, sequences, valid[1], valid[2], 40, 20, ckpt, (10,), 64, log=log,
                            progress=False, resume_dir=resume)  # fmt: skip
    sem = load_semantic(root / "data/sids", 40)
    return train_gr(cfg, args.family, sem, users, sequences, valid, 20, ckpt, (10,), 64, log=log, progress=False,
                    resume_dir=resume)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=Path, required=True, help="project folder with data/split and data/sids")
    parser.add_argument("--family", choices=["sasrec", "tiger", "s2gr", "sft"], required=True)
    parser.add_argument("--batch", type=int, required=True, help="global batch size")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--ckpt", type=Path, required=True, help="checkpoint folder")
    parser.add_argument("--out", type=Path, required=True, help="rank 0 writes the last epoch's weights here")
    parser.add_argument("--kill-epoch", type=int, default=0)
    parser.add_argument("--aux", type=float, default=0.5, help="S2GR: weight of every auxiliary loss (0: unused heads)")
    args = parser.parse_args()
    outcome = train(args)
    import torch  # after s2gr_core: it sets OpenMP's environment before torch loads

    if outcome.runtime is not None and outcome.runtime.world.main:
        torch.save(load_torch(args.ckpt / "resume" / "last.pt")["model"], args.out)
        history = [{k: r[k] for k in ("epoch", "train_loss")} for r in outcome.history]
        args.out.with_suffix(".json").write_text(json.dumps({"resumed_from": outcome.resumed_from, "history": history}))


if __name__ == "__main__":
    main()
