"""Student benchmarks on a prepared dataset: accuracy (train_and_evaluate) and loop throughput
against a bare PyTorch loop. `cotpd bench` (cotpd.bench) builds its grid on these functions.

    python -m cotpd.bench_student --dataset twitter2015 --variant baseline --set train.data_fraction=0.125
    python -m cotpd.bench_student --dataset twitter2015 --variant cotpd --throughput 200
"""
from __future__ import annotations

import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from .records import Sample


def throughput_comparison(samples: Sequence[Sample], task: str, labels: list[str], variant: str, tparams: dict,
                          seed: int = 13) -> dict:
    """Train tokens/s of our loop (one epoch of `train`) and of a bare loop over the same batches."""
    import torch

    from .model.student import build_student
    from .train import bare_loop_throughput, resolve_device, set_seed, train

    tp = {**tparams, "epochs": 1, "patience": 1}
    with tempfile.TemporaryDirectory() as tmp:
        res = train(samples, samples[:8], task=task, labels=labels, variant=variant, tparams=tp,
                    model_dir=Path(tmp) / "m", seed=seed, progress=False)
    set_seed(seed)
    model = build_student(tp["encoder"], task, labels, variant, tp).to(resolve_device(tp.get("device", "auto")))
    bare = bare_loop_throughput(model, samples, int(tp["batch_size"]), lr=tp["lr"], seed=seed,
                                bf16=bool(tp.get("bf16", True)))
    ours = res.train_tokens_per_s
    return {"variant": variant, "n": len(samples), "ours_tokens_per_s": round(ours, 1),
            "bare_tokens_per_s": round(bare, 1), "ratio": round(ours / bare, 3),
            "device": str(resolve_device(tp.get("device", "auto"))), "threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> int:
    from .model.corpus import load_corpus
    from .params import apply_set, find_root, load_params, parse_set
    from .train import train_and_evaluate, training_parser

    p = training_parser("python -m cotpd.bench_student", __doc__)
    p.add_argument("--throughput", type=int, metavar="N", default=0,
                   help="only compare loop throughput on the first N training samples")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = (args.root or find_root()).resolve()
    params = apply_set(load_params(root), parse_set(args.set))
    if args.throughput:
        c = load_corpus(args.dataset, root, params, args.seed)
        out = throughput_comparison(c.train[: args.throughput], c.task, c.labels, args.variant, c.dparams["train"],
                                    c.dparams.get("seed", 13) if args.seed is None else args.seed)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            res = train_and_evaluate(args.dataset, args.variant, params, root, args.seed, model_dir=Path(tmp) / "m")
        out = {k: v for k, v in res.to_dict().items() if k != "model_dir"}
    print(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
