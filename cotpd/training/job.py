"""One training of a prepared dataset: load it, find its resume checkpoint, train, score on test.

`prepare_training(...)` returns a TrainingJob (the corpus loaded, the checkpoint found) so that the
caller can continue the MLflow run a checkpoint names before the training starts (cotpd.stages.train,
cotpd.bench.grid); `train_and_evaluate(...)` is both steps. The command line:

    python -m cotpd.training --dataset sample --variant cotpd
    torchrun --standalone --nproc_per_node 2 -m cotpd.training --dataset sample --variant cotpd

Two stages in one training (train.distill.teacher=auto, issue #19): a CoTPD job first trains its
teacher, the knowledge view, into `<model_dir>.teacher` beside its own folder (as its resume
checkpoint sits beside it: not a declared output, no DVC cycle), then distils it into the prompt view
(cotpd.model.teacher). A teacher that finished for exactly these params and data is reused, one that
was killed resumes, and the student's time counts the teacher's. Every finished knowledge-view job
leaves that record (`<model_dir>.done.json`), so a pipeline that trains the `knowledge` variant before
a two-stage `cotpd` (train.variants [knowledge, cotpd]) distils that model instead of training the
same knowledge view a second time. The bench passes its own seed's knowledge model, which its grid
trains anyway.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from ..args import common, params_of, root_of, setup_logging
from ..errors import CotpdError
from ..io import read_json, write_json
from ..model import teacher
from ..model.student import VARIANTS
from ..params import Layout, Params
from . import checkpoint
from .checkpoint import Resume
from .corpus import Corpus, load_corpus
from .loop import TrainResult, train
from .runtime import dist_env

log = logging.getLogger(__name__)


def teacher_dir(model_dir: Path) -> Path:
    """Where a two-stage CoTPD training keeps the knowledge view it trains first."""
    return model_dir.with_name(f"{model_dir.name}.teacher")


def done_path(model_dir: Path) -> Path:
    """The record a finished knowledge-view job leaves beside its folder (identity, dev F1, seconds)."""
    return model_dir.with_name(f"{model_dir.name}.done.json")


@dataclass
class TrainingJob:
    """A training about to run: its corpus loaded and its resume checkpoint (if any) read, so that the
    caller can continue the MLflow run the checkpoint names before the training starts. `teacher`:
    the knowledge-view job a two-stage CoTPD runs first; `teacher_done`: the record of one that
    already finished for these params and data."""

    dataset: str
    variant: str
    corpus: Corpus
    seed: int
    model_dir: Path
    save_params: dict
    resume: Resume | None
    ident: dict
    teacher: TrainingJob | None = None
    teacher_done: dict | None = None
    record: dict | None = None  # a finished knowledge job's own record (done_path): a teacher for others

    @property
    def resume_run_id(self) -> str | None:
        return self.resume.run_id if self.resume is not None else None

    def run_teacher(self, progress: bool | None) -> dict | None:
        """Train the two-stage teacher unless it is done; its record (dev F1, seconds) either way."""
        if self.teacher is None:
            return self.teacher_done
        log.info("two stages: training the teacher (knowledge view) into %s", self.teacher.model_dir)
        self.teacher.run(evaluate_test=False, progress=progress, keep_group=True)
        return self.teacher.record

    def run(self, on_epoch_end: Callable[[int, dict], None] | None = None, evaluate_test: bool = True,
            progress: bool | None = None, run_id: str | None = None, keep_group: bool = False) -> TrainResult:
        t0 = time.perf_counter()
        done = self.run_teacher(progress)
        c, dp = self.corpus, self.corpus.dparams
        result = train(c.train, c.valid, task=c.task, labels=c.labels, variant=self.variant, cfg=dp.train,
                       model_dir=self.model_dir, test_samples=c.test if evaluate_test else None, seed=self.seed,
                       on_epoch_end=on_epoch_end, progress=progress, save_params=self.save_params,
                       test_knowledge_view=dp.eval.view == "knowledge", resume=self.resume, run_id=run_id,
                       keep_group=keep_group)
        result.data = dict(c.stats)
        if self.variant == "knowledge":  # a teacher for any two-stage CoTPD of these params and data
            self.record = {"identity": self.ident, "dev_f1": result.best_dev.get("f1"), "best_epoch": result.best_epoch,
                           "seconds": time.perf_counter() - t0 + result.timings["earlier_s"]}
            if dist_env()[0] == 0:
                write_json(done_path(self.model_dir), self.record)  # atomic: a killed job leaves none
        if done is not None:  # the cost of two stages is both trainings (MLflow: time_teacher_s, teacher_dev_f1)
            result.timings["teacher_s"] = float(done["seconds"])
            result.teacher_dev_f1 = done["dev_f1"]
        return result


def prepare_training(dataset: str, variant: str, params: Params | dict, root: str | Path, seed: int | None = None,
                     model_dir: str | Path | None = None, fresh: bool = False) -> TrainingJob:
    """Load `dataset` (prepared under root/outputs) and find the checkpoint to resume from (none with
    `fresh`, or when it was written with other params or data); a two-stage CoTPD also plans its teacher."""
    root = Path(root)
    corpus = load_corpus(dataset, root, params, seed)
    seed = corpus.dparams.seed if seed is None else seed
    model_dir = Path(model_dir) if model_dir else Layout(root, dataset).model_dir(variant)
    if variant != "cotpd" or corpus.dparams.train.distill.teacher != teacher.KNOWLEDGE:
        return _job(corpus, variant, seed, model_dir, fresh)
    # the teacher reads the same samples; its own params copy keeps "auto" (no path in its identity)
    own = teacher_dir(model_dir)
    job_teacher = _job(replace(corpus, dparams=corpus.dparams.model_copy(deep=True)), "knowledge", seed, own, fresh)
    # a finished teacher: the knowledge variant this project already trained if it is this one, else its own
    found = () if fresh else (Layout(root, dataset).model_dir("knowledge"), own)
    tdir, done = next(((d, rec) for d in found if (rec := _finished(d, job_teacher.ident)) is not None), (own, None))
    corpus.dparams.train.distill.teacher = str(tdir)
    job = _job(corpus, variant, seed, model_dir, fresh)
    job.teacher, job.teacher_done = (None, done) if done is not None else (job_teacher, None)
    return job


def _job(corpus: Corpus, variant: str, seed: int, model_dir: Path, fresh: bool) -> TrainingJob:
    """The job of `variant` on a loaded corpus: its identity, and the checkpoint that matches it."""
    saved = {"dataset": corpus.dataset, "seed": seed, "train": corpus.dparams.train.model_dump(mode="json", by_alias=True)}
    ident = checkpoint.identity(corpus.train, corpus.valid, variant=variant, cfg=corpus.dparams.train, seed=seed,
                                params=saved, world=dist_env()[1])
    return TrainingJob(corpus.dataset, variant, corpus, seed, model_dir, saved,
                       checkpoint.find(model_dir, ident, fresh), ident)


def _finished(tdir: Path, ident: dict) -> dict | None:
    """The record of a teacher that finished for exactly this identity (params and data), else None."""
    path = done_path(tdir)
    if not path.exists() or not (tdir / "config.json").exists():
        return None
    done = read_json(path)
    if done.get("identity") != ident:
        log.info("two stages: the knowledge view in %s was trained with other params or data: not this teacher", tdir)
        return None
    log.info("two stages: reusing the teacher in %s (dev F1 %.4f)", tdir, done.get("dev_f1") or 0.0)
    return done


def train_and_evaluate(dataset: str, variant: str, params: Params | dict, root: str | Path, seed: int | None = None,
                       on_epoch_end: Callable[[int, dict], None] | None = None, model_dir: str | Path | None = None,
                       evaluate_test: bool = True, progress: bool | None = None, fresh: bool = False) -> TrainResult:
    """Load `dataset`, train `variant` (resuming its checkpoint unless `fresh`), score the best on test."""
    job = prepare_training(dataset, variant, params, root, seed, model_dir, fresh)
    return job.run(on_epoch_end, evaluate_test, progress)


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
    p.add_argument("--fresh", action="store_true", help="train from scratch, ignoring a resume checkpoint")
    args = p.parse_args(argv)
    setup_logging(args)
    try:
        root, params = root_of(args), params_of(args)
        res = train_and_evaluate(args.dataset, args.variant, params, root, args.seed, model_dir=args.model_dir,
                                 evaluate_test=not args.no_test, fresh=args.fresh)
    except CotpdError as exc:
        print(f"python -m cotpd.training: error: {exc}", file=sys.stderr)
        return 2
    if dist_env()[0] == 0:
        print(json.dumps(res.to_dict(), indent=2, default=str))
    return 0
