"""Student benchmarks on a prepared dataset: accuracy (train_and_evaluate) and loop throughput
against a bare PyTorch loop. `cotpd bench` (cotpd.bench) builds its grid on these functions.

    python -m cotpd.bench.student --dataset twitter2015 --variant baseline --set train.data_fraction=0.125
    python -m cotpd.bench.student --dataset twitter2015 --variant cotpd --throughput 200
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Sequence

import torch

from ..args import params_of, root_of, setup_logging
from ..config import TrainCfg
from ..model.student import build_student
from ..records import Sample
from ..training.corpus import load_corpus
from ..training.job import train_and_evaluate, training_parser
from ..training.loop import bare_loop_throughput, resolve_device, set_seed, train


def bare_throughput(samples: Sequence[Sample], task: str, labels: list[str], variant: str, cfg: TrainCfg,
                    seed: int, steps: int | None = None) -> float:
    """Train tokens/s of a bare forward/backward/AdamW loop on a fresh student (`steps` batches, None: all)."""
    set_seed(seed)
    model = build_student(task, labels, variant, cfg).to(resolve_device(cfg.device))
    return bare_loop_throughput(model, samples, cfg.batch_size, steps, lr=cfg.lr, seed=seed, bf16=cfg.bf16)


def throughput_comparison(samples: Sequence[Sample], task: str, labels: list[str], variant: str,
                          train_cfg: TrainCfg, seed: int = 13) -> dict:
    """Train tokens/s of our loop (one epoch of `train`) and of a bare loop over the same batches.
    Two untimed bare steps come first: on CUDA the first steps of a process pay for the context,
    cuBLAS and lazy kernel loading (about 1.5 s on an H200), which would otherwise be charged to
    whichever loop runs first (results/gpu/README.md: ratio 0.082 without them)."""
    cfg = train_cfg.model_copy(update={"epochs": 1, "patience": 1})
    bare_throughput(samples[: 2 * cfg.batch_size], task, labels, variant, cfg, seed, steps=2)
    with tempfile.TemporaryDirectory() as tmp:
        res = train(samples, samples[:8], task=task, labels=labels, variant=variant, cfg=cfg,
                    model_dir=Path(tmp) / "m", seed=seed, progress=False)
    bare = bare_throughput(samples, task, labels, variant, cfg, seed)
    ours = res.train_tokens_per_s
    return {"variant": variant, "n": len(samples), "ours_tokens_per_s": round(ours, 1),
            "bare_tokens_per_s": round(bare, 1), "ratio": round(ours / bare, 3),
            "device": str(resolve_device(cfg.device)), "threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> int:
    p = training_parser("python -m cotpd.bench.student", __doc__)
    p.add_argument("--throughput", type=int, metavar="N", default=0,
                   help="only compare loop throughput on the first N training samples")
    args = p.parse_args(argv)
    setup_logging(args)
    root, params = root_of(args), params_of(args)
    if args.throughput:
        c = load_corpus(args.dataset, root, params, args.seed)
        out = throughput_comparison(c.train[: args.throughput], c.task, c.labels, args.variant, c.dparams.train,
                                    c.dparams.seed if args.seed is None else args.seed)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            res = train_and_evaluate(args.dataset, args.variant, params, root, args.seed, model_dir=Path(tmp) / "m")
        out = {k: v for k, v in res.to_dict().items() if k != "model_dir"}
    print(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
