"""Training loop for the student (any variant), single process or DDP under torchrun.

`train(...)` runs the loop on samples, keeps the best dev checkpoint and scores it on test;
cotpd.training.job loads a prepared dataset for it (what `cotpd train` and `cotpd bench` build
on). `bare_loop_throughput(...)` times a plain forward/backward/step loop over the same batches,
to check that our loop's overhead stays small.

    torchrun --standalone --nproc_per_node 2 -m cotpd.training --dataset sample --variant cotpd
"""
from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..config import TrainCfg
from ..model import teacher
from ..model.data import bucket_batches, collate
from ..model.distill import lambda_at, warmup_epochs
from ..model.infer import autocast, featurizer_for, to_device
from ..model.student import Student, build_student, load_student
from ..records import Sample
from . import checkpoint
from .bare import bare_loop_throughput  # noqa: F401 (re-exported: its callers know it from here)
from .checkpoint import Progress, Resume
from .evaluate import evaluate
from .runtime import StopVote, dist_env, make_optimizer, resolve_device, set_seed
from .signals import Interrupted, stop_on_sigterm

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
    resumed_from_epoch: int | None = None  # epochs a resume checkpoint had completed; None: from scratch
    teacher_dev_f1: float | None = None  # two stages: the dev F1 of the teacher trained first (cotpd.training.job)

    def to_dict(self) -> dict:
        return asdict(self)


def train(train_samples: Sequence[Sample], valid_samples: Sequence[Sample], *, task: str, labels: list[str],
          variant: str, cfg: TrainCfg, model_dir: str | Path, test_samples: Sequence[Sample] | None = None,
          seed: int = 13, eval_view: str = "prompt", on_epoch_end: Callable[[int, dict], None] | None = None,
          progress: bool | None = None, save_params: dict | None = None, test_knowledge_view: bool = False,
          resume: Resume | None = None, run_id: str | None = None, keep_group: bool = False) -> TrainResult:
    """Train one variant; keep the best dev-F1 checkpoint in `model_dir`; score it on test if given.

    Dev selection and test use `eval_view` (prompt: text only, as deployed). With
    `test_knowledge_view` a cotpd student's knowledge view is also scored (test["knowledge_view"]).
    `save_params` goes into the checkpoint's config.json as "params" (default: `cfg`).
    A resume checkpoint (cotpd.training.checkpoint) is written beside `model_dir` after every epoch,
    with `run_id` (the MLflow run to continue); `resume` (from `prepare_training`) continues one.
    SIGTERM stops at the next step boundary, saves it and raises Interrupted (exit code 143)."""
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
    ident = checkpoint.identity(train_samples, valid_samples, variant=variant, cfg=cfg, seed=seed,
                                params=save_params, world=world)
    if resume is not None and resume.state["identity"] != ident:  # prepare_training checked this very training
        raise checkpoint.CheckpointError(resume.path, "was found for another training than this one")
    set_seed(seed)
    model = build_student(task, labels, variant, cfg).to(device)
    views = model.train_views
    t0 = time.perf_counter()
    feats = featurizer_for(model).features(train_samples, views)
    if variant == "cotpd" and cfg.distill.teacher:  # two-stage: start from the teacher, cache its logits
        teacher.attach(feats, teacher.prepare(model, cfg.distill.teacher, train_samples, device))
    lengths, pad = [f["length"] for f in feats], model.tokenizer.pad_token_id or 0
    timings = {"featurize_s": time.perf_counter() - t0, "setup_s": t0 - t_start}
    # cotpd's teacher warm-up (train.distill.warmup_epochs) comes before, and on top of, train.epochs;
    # the LR schedule spans both phases, lambda's ramp the distillation phase only
    warm = warmup_epochs(cfg.distill, variant)
    epochs = cfg.epochs + warm
    steps_per_epoch = len(bucket_batches(lengths, bs, seed=seed, rank=rank, world=world))
    opt, sched = make_optimizer(model, cfg, steps_per_epoch * epochs)
    prog = resume.restore(model, opt, sched, device, rank) if resume is not None else Progress()
    earlier_s = prog.elapsed_s  # spent by the invocations before this resume
    ckpt = checkpoint.resume_path(model_dir)
    log.info("%s: rank %d of %d on %s, %d samples, %d steps per epoch", variant, rank, world, device,
             len(feats), steps_per_epoch)
    net = model
    if world > 1:
        # the warm-up leaves the prompt generator out of the graph: DDP must look for unused parameters
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                                        find_unused_parameters=warm > 0)

    def save_checkpoint() -> None:  # collective under torchrun (RNG states of every rank); rank 0 writes
        rngs = checkpoint.all_rng_states(device, world)
        prog.elapsed_s = earlier_s + time.perf_counter() - t_start
        if rank == 0:
            checkpoint.save(ckpt, model, opt, sched, prog, ident, rngs, run_id)

    vote = StopVote(world)
    with stop_on_sigterm() as stop:
        while prog.epoch < epochs and prog.bad < cfg.patience:
            epoch = prog.epoch
            model.warmup = epoch < warm  # the phase follows from the epoch: a resumed run is in the right one
            net.train()
            batches = bucket_batches(lengths, bs, seed=seed, epoch=epoch, rank=rank, world=world)
            bar = tqdm(batches[prog.step:], desc=f"{variant} epoch {epoch + 1}/{epochs}", disable=not show,
                       leave=False, initial=prog.step, total=len(batches))
            t_ep, loss_sum = time.perf_counter() - prog.ep_time, torch.as_tensor(prog.loss_sum, device=device)
            for idx in bar:
                if vote(bool(stop)):  # a step boundary: the state is whole, save it and go
                    prog.loss_sum, prog.ep_time = loss_sum, time.perf_counter() - t_ep
                    save_checkpoint()
                    log.warning("stopped by signal at epoch %d step %d: resume checkpoint %s", epoch + 1,
                                prog.step, ckpt)
                    raise Interrupted(stop.signum or 15, ckpt)
                cpu_batch = collate([feats[i] for i in idx], views, pad)
                prog.ep_tokens += int(sum(cpu_batch[v]["attention_mask"].sum() for v in views))
                batch = to_device(cpu_batch, device)
                model.kl_lambda = lambda_at(cfg.distill, (epoch - warm) * steps_per_epoch + prog.step,
                                            cfg.epochs * steps_per_epoch)
                with autocast(device, bf16):
                    out = net(batch)
                out["loss"].backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                loss_sum, prog.step = loss_sum + out["loss"].detach(), prog.step + 1  # stays on device: no sync
                if show and (prog.step % 10 == 0 or prog.step == len(batches)):
                    bar.set_postfix(loss=f"{float(loss_sum) / prog.step:.3f}",
                                    tok_s=f"{prog.ep_tokens / max(1e-9, time.perf_counter() - t_ep):.0f}")
            loss_mean = float(loss_sum) / max(1, prog.step)  # syncs the device, so the epoch time is real
            ep_time = time.perf_counter() - t_ep
            prog.train_time, prog.tokens_seen = prog.train_time + ep_time, prog.tokens_seen + prog.ep_tokens
            # rank 0 scores dev and decides; the others follow its decision
            state = [prog.bad]
            if rank == 0:
                row = {"epoch": epoch, "loss": loss_mean, "tokens_per_s": prog.ep_tokens * world / max(1e-9, ep_time),
                       "epoch_s": ep_time, "lr": sched.get_last_lr()[0], "phase": "warmup" if model.warmup else "train"}
                end_epoch(model, valid_samples, eval_view, bf16, prog, model_dir, save_params, seed, row)
                if on_epoch_end is not None:
                    on_epoch_end(epoch, dict(prog.history[-1]))
                state = [prog.bad]
            if world > 1:
                torch.distributed.broadcast_object_list(state, src=0)
            prog.bad = state[0]
            prog.next_epoch()
            save_checkpoint()
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
        if not keep_group:  # a two-stage teacher keeps it for its student: a second init under torchrun hangs
            torch.distributed.destroy_process_group()
    if rank == 0:
        checkpoint.remove(model_dir)
    # total_s: the whole training's wall time, a resumed one's earlier invocations too (up to its checkpoint)
    timings.update(train_s=prog.train_time, total_s=earlier_s + time.perf_counter() - t_start, earlier_s=earlier_s)
    return TrainResult(variant, str(model_dir), prog.best_epoch, prog.best_dev, test, prog.history,
                       prog.tokens_seen * world / max(1e-9, prog.train_time), timings, len(train_samples), world,
                       resumed_from_epoch=resume.epoch if resume is not None else None)


def end_epoch(model: Student, valid_samples: Sequence[Sample], eval_view: str, bf16: bool, prog: Progress,
              model_dir: Path, save_params: dict, seed: int, row: dict) -> None:
    """Rank 0 at the end of an epoch: score dev, keep the model if it improved, add the history row.
    A teacher warm-up epoch (row["phase"]) is scored for the record only: the view it did not train
    is no candidate for the best model, and it does not count towards early stopping."""
    t_ev, epoch = time.perf_counter(), prog.epoch
    dev = evaluate(model, valid_samples, eval_view, bf16=bf16)
    improved = row["phase"] != "warmup" and dev["f1"] > prog.best_f1
    if improved:
        prog.best_f1, prog.best_epoch, prog.best_dev, prog.bad = dev["f1"], epoch, dev, 0
        model.save(model_dir, save_params, {"best_epoch": epoch, "dev_f1": dev["f1"], "seed": seed})
    elif row["phase"] != "warmup":
        prog.bad += 1
    row.update(dev_f1=dev["f1"], dev_precision=dev["precision"], dev_recall=dev["recall"],
               eval_s=time.perf_counter() - t_ev, improved=improved)
    prog.history.append(row)
    log.info("%s epoch %d%s: loss %.4f dev F1 %.4f%s", model.variant, epoch + 1,
             " (warmup)" if row["phase"] == "warmup" else "", row["loss"], dev["f1"], " (best)" if improved else "")
