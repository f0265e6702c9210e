"""Two-stage CoTPD in the bench (train.distill.teacher=auto, cotpd.model.teacher): which teacher a
CoTPD training distils, which models the grid keeps for that, and what the teacher cost.

A CoTPD of the main grid (or a lever on its data) borrows its seed's knowledge model: the grid
trains that model anyway, and it is the very training `auto` would repeat (same params, seed and
data; the knowledge view reads no distillation param). It is borrowed only once its own training is
saved as done: a model still training in another lane is half a teacher. Any other CoTPD (a
fraction's subset, an ablation's grains, a knowledge model not done yet) keeps `auto` and trains
its teacher on its own data, in its own time."""
from __future__ import annotations

import shutil
from pathlib import Path

from ..model.teacher import KNOWLEDGE
from ..training.job import done_path, teacher_dir
from .spec import RunSpec


def teacher_spec(spec: RunSpec) -> RunSpec | None:
    """The knowledge training whose model `spec` may borrow as its teacher (None: it trains its own)."""
    if spec.variant != "cotpd" or spec.group not in ("main", "levers") or spec.knowledge_grains or spec.fraction != 1.0:
        return None
    return RunSpec(spec.dataset, "knowledge", spec.seed)


def borrow_teacher(bench, spec: RunSpec, train_over: dict) -> dict | None:
    """Point `train_over`'s distill.teacher (auto) at the seed's done knowledge model; return that
    model's record (its seconds are this CoTPD's teacher cost), or None when none is borrowed."""
    tspec = teacher_spec(spec)
    if tspec is None or (train_over.get("distill") or {}).get("teacher") != KNOWLEDGE:
        return None
    rec = bench.done_record(tspec)
    path = bench.work / "models" / tspec.key
    if rec is None or not (path / "config.json").exists():
        return None
    train_over["distill"]["teacher"] = str(path)
    return rec


def is_teacher(spec: RunSpec, distill_teacher: str | None) -> bool:
    """A main-grid knowledge model that its seed's two-stage CoTPD will read: kept at every seed."""
    return spec.variant == "knowledge" and spec.group == "main" and distill_teacher == KNOWLEDGE


def drop_model(model_dir: Path) -> None:
    """A model the grid does not keep, with the teacher an `auto` training made beside it (and the
    records of finished knowledge views, cotpd.training.job.done_path)."""
    for folder in (model_dir, teacher_dir(model_dir)):
        shutil.rmtree(folder, ignore_errors=True)
        done_path(folder).unlink(missing_ok=True)
