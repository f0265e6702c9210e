"""Training loop for the student (any variant), single process or DDP under torchrun.

`train(...)` runs the loop on samples; `train_and_evaluate(dataset, variant, params, root, seed)`
loads a prepared dataset, trains, keeps the best dev checkpoint and scores it on test (what
`cotpd bench` builds on). `bare_loop_throughput(...)` times a plain forward/backward/step loop over
the same batches, to check that our loop's overhead stays small.

    torchrun --standalone --nproc_per_node 2 -m cotpd.training.loop --dataset sample --variant cotpd
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..args import common, params_of, root_of, setup_logging
from ..config import TrainCfg
from ..errors import ConfigError
from ..model.data import bucket_batches, collate
from ..model.infer import autocast, featurizer_for, to_device
from ..model.student import VARIANTS, Student, build_student, load_student
from ..params import Layout, Params
from ..records import Sample
from .corpus import load_corpus
from .evaluate import evaluate

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    variant: str
    model_dir: str
    best_epoch: int
    best_dev: dict
    test: dict | None
    history: list[dict] = field(default_factory=list)
    train_tokens_per_s: float = 0.0
    timings: dict = field(default_factory=dict)
    n_train: int = 0
    world_size: int = 1
    data: dict = field(default_factory=dict)  # corpus counts (augmented, with knowledge, ...)

    def to_dict(self) -> dict:
        return asdict(self)


def set_seed(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    np.random.seed(seed % 2**32)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """train.device: auto (CUDA when this torch sees a GPU, else CPU) | cuda (this process's local
    rank under torchrun) | cuda:N | cpu."""
    name = str(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if name != "cuda" and not (name.startswith("cuda:") and name[5:].isdigit()):
        raise ConfigError(f"train.device must be auto, cpu, cuda or cuda:N, got {name!r}")
    if not torch.cuda.is_available():  # else torch's own error comes late, from deep inside .to()
        raise ConfigError(f"train.device is {name}, but this torch {torch.__version__} sees no CUDA device "
                          "(a CPU build, or no driver): use device auto or cpu")
    return torch.device("cuda", local_rank) if name == "cuda" else torch.device(name)


def dist_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from the torchrun environment; (0, 1, 0) otherwise."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def make_optimizer(model: Student, cfg: TrainCfg, total_steps: int):
    """AdamW: train.lr for the encoder (and word-shape embedding), train.head_lr for prompt generator,
    head and CRF; linear warm-up over train.warmup_ratio of the steps, then linear decay to 0."""
    from transformers import get_linear_schedule_with_warmup  # lazy: transformers takes seconds to import

    groups: dict[tuple, list] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            # the word-shape embedding is part of the encoder's input: it learns at the encoder's pace
            lr = cfg.lr if name.startswith(("encoder.", "case_embed.")) else cfg.head_lr
            wd = 0.0 if p.ndim < 2 else cfg.weight_decay  # no decay on biases / LayerNorm
            groups.setdefault((lr, wd), []).append(p)
    opt = torch.optim.AdamW([{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()],
                            fused=True)  # one kernel per group: the default loop took 20% of a CPU step
    sched = get_linear_schedule_with_warmup(opt, int(cfg.warmup_ratio * total_steps), max(1, total_steps))
    return opt, sched


def train(train_samples: Sequence[Sample], valid_samples: Sequence[Sample], *, task: str, labels: list[str],
          variant: str, cfg: TrainCfg, model_dir: str | Path, test_samples: Sequence[Sample] | None = None,
          seed: int = 13, eval_view: str = "prompt", on_epoch_end: Callable[[int, dict], None] | None = None,
          progress: bool | None = None, save_params: dict | None = None, test_knowledge_view: bool = False) -> TrainResult:
    """Train one variant; keep the best dev-F1 checkpoint in `model_dir`; score it on test if given.

    Dev selection and test use `eval_view` (prompt: text only, as deployed). With
    `test_knowledge_view` a cotpd student's knowledge view is also scored (test["knowledge_view"]).
    `save_params` goes into the checkpoint's config.json as "params" (default: `cfg`)."""
    t_start = time.perf_counter()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    rank, world, local_rank = dist_env()
    device = resolve_device(cfg.device, local_rank)
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    bf16, bs, model_dir = cfg.bf16, cfg.batch_size, Path(model_dir)
    if save_params is None:
        save_params = cfg.model_dump(mode="json", by_alias=True)
    show = (rank == 0 and (sys.stderr.isatty() if progress is None else progress))
    set_seed(seed)
    model = build_student(task, labels, variant, cfg).to(device)
    views = model.train_views
    t0 = time.perf_counter()
    feats = featurizer_for(model).features(train_samples, views)
    lengths, pad = [f["length"] for f in feats], model.tokenizer.pad_token_id or 0
    timings = {"featurize_s": time.perf_counter() - t0, "setup_s": t0 - t_start}
    epochs = cfg.epochs
    steps_per_epoch = len(bucket_batches(lengths, bs, seed=seed, rank=rank, world=world))
    opt, sched = make_optimizer(model, cfg, steps_per_epoch * epochs)
    log.info("%s: rank %d of %d on %s, %d samples, %d steps per epoch", variant, rank, world, device,
             len(feats), steps_per_epoch)
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    best_f1, best_epoch, best_dev, bad, history = -1.0, -1, {}, 0, []
    train_time, tokens_seen = 0.0, 0
    for epoch in range(epochs):
        net.train()
        batches = bucket_batches(lengths, bs, seed=seed, epoch=epoch, rank=rank, world=world)
        bar = tqdm(batches, desc=f"{variant} epoch {epoch + 1}/{epochs}", disable=not show, leave=False)
        t_ep, ep_tokens, loss_sum, n_steps = time.perf_counter(), 0, torch.zeros((), device=device), 0
        for idx in bar:
            cpu_batch = collate([feats[i] for i in idx], views, pad)
            ep_tokens += int(sum(cpu_batch[v]["attention_mask"].sum() for v in views))
            batch = to_device(cpu_batch, device)
            with autocast(device, bf16):
                out = net(batch)
            out["loss"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            loss_sum, n_steps = loss_sum + out["loss"].detach(), n_steps + 1  # stays on device: no sync
            if show and (n_steps % 10 == 0 or n_steps == len(batches)):
                bar.set_postfix(loss=f"{float(loss_sum) / n_steps:.3f}",
                                tok_s=f"{ep_tokens / max(1e-9, time.perf_counter() - t_ep):.0f}")
        loss_mean = float(loss_sum) / max(1, n_steps)  # syncs the device, so the epoch time is real
        ep_time = time.perf_counter() - t_ep
        train_time, tokens_seen = train_time + ep_time, tokens_seen + ep_tokens
        # rank 0 scores dev and decides; the others follow its decision
        state = [None]
        if rank == 0:
            t_ev = time.perf_counter()
            dev = evaluate(model, valid_samples, eval_view, bf16=bf16)
            improved = dev["f1"] > best_f1
            if improved:
                best_f1, best_epoch, best_dev, bad = dev["f1"], epoch, dev, 0
                model.save(model_dir, save_params, {"best_epoch": epoch, "dev_f1": dev["f1"], "seed": seed})
            else:
                bad += 1
            row = {"epoch": epoch, "loss": loss_mean, "dev_f1": dev["f1"],
                   "dev_precision": dev["precision"], "dev_recall": dev["recall"],
                   "tokens_per_s": ep_tokens * world / max(1e-9, ep_time), "epoch_s": ep_time,
                   "eval_s": time.perf_counter() - t_ev, "lr": sched.get_last_lr()[0], "improved": improved}
            history.append(row)
            log.info("%s epoch %d: loss %.4f dev F1 %.4f%s", variant, epoch + 1, row["loss"], dev["f1"],
                     " (best)" if improved else "")
            if on_epoch_end is not None:
                on_epoch_end(epoch, dict(row))
            state = [bad >= cfg.patience]
        if world > 1:
            torch.distributed.broadcast_object_list(state, src=0)
        if state[0]:
            break
    test = None
    if rank == 0 and test_samples is not None:
        t_te = time.perf_counter()
        best = load_student(model_dir, device)
        test = evaluate(best, test_samples, eval_view, bf16=bf16)
        if test_knowledge_view and best.variant == "cotpd":
            test["knowledge_view"] = evaluate(best, test_samples, "knowledge", bf16=bf16)
        timings["test_s"] = time.perf_counter() - t_te
    if world > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    timings.update(train_s=train_time, total_s=time.perf_counter() - t_start)
    return TrainResult(variant, str(model_dir), best_epoch, best_dev, test, history,
                       tokens_seen * world / max(1e-9, train_time), timings, len(train_samples), world)


def train_and_evaluate(dataset: str, variant: str, params: Params | dict, root: str | Path, seed: int | None = None,
                       on_epoch_end: Callable[[int, dict], None] | None = None, model_dir: str | Path | None = None,
                       evaluate_test: bool = True, progress: bool | None = None) -> TrainResult:
    """Load `dataset` (prepared under root/outputs), train `variant`, score the best checkpoint on test."""
    root = Path(root)
    corpus = load_corpus(dataset, root, params, seed)
    dp = corpus.dparams
    seed = dp.seed if seed is None else seed
    model_dir = Path(model_dir) if model_dir else Layout(root, dataset).model_dir(variant)
    saved = {"dataset": dataset, "seed": seed, "train": dp.train.model_dump(mode="json", by_alias=True)}
    result = train(corpus.train, corpus.valid, task=corpus.task, labels=corpus.labels, variant=variant, cfg=dp.train,
                   model_dir=model_dir, test_samples=corpus.test if evaluate_test else None, seed=seed,
                   on_epoch_end=on_epoch_end, progress=progress, save_params=saved,
                   test_knowledge_view=dp.eval.view == "knowledge")
    result.data = dict(corpus.stats)
    return result


def bare_loop_throughput(model: Student, samples: Sequence[Sample], batch_size: int = 16, steps: int | None = None,
                         lr: float = 5e-5, seed: int = 0, bf16: bool = True) -> float:
    """Train tokens/s of a bare forward/backward/AdamW-step loop over the same bucketed batches our
    loop uses (collated before the clock starts): the reference `train` should reach within 10%."""
    device = next(model.parameters()).device
    views = model.train_views
    feats = featurizer_for(model).features(samples, views)
    batches = bucket_batches([f["length"] for f in feats], batch_size, seed=seed)[:steps]
    pad = model.tokenizer.pad_token_id or 0
    cpu = [collate([feats[i] for i in b], views, pad) for b in batches]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, fused=True)  # the same optimizer kernel as `train`
    model.train()
    tokens, t0 = 0, time.perf_counter()
    for cb in cpu:
        tokens += int(sum(cb[v]["attention_mask"].sum() for v in views))
        with autocast(device, bf16):
            loss = model(to_device(cb, device))["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return tokens / max(1e-9, time.perf_counter() - t0)


def training_parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """The arguments every training command line shares (this module's and cotpd.bench.student's)."""
    p = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter,
                                parents=[common()])
    p.add_argument("--dataset", required=True, help="dataset key in params.yaml")
    p.add_argument("--variant", default="cotpd", choices=VARIANTS)
    p.add_argument("--seed", type=int, default=None, help="default: params.yaml seed")
    return p


def main(argv: list[str] | None = None) -> int:
    """`python -m cotpd.training` (and torchrun): train one variant of one prepared dataset."""
    p = training_parser("python -m cotpd.training", __doc__)
    p.add_argument("--model-dir", type=Path, default=None)
    p.add_argument("--no-test", action="store_true", help="skip the test-set evaluation")
    args = p.parse_args(argv)
    setup_logging(args)
    root, params = root_of(args), params_of(args)
    res = train_and_evaluate(args.dataset, args.variant, params, root, args.seed, model_dir=args.model_dir,
                             evaluate_test=not args.no_test)
    if dist_env()[0] == 0:
        print(json.dumps(res.to_dict(), indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
