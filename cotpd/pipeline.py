"""The pipeline's stages, in lineage order, each one importable function.

Every stage has the signature ``run(dataset, root, params, **resources) -> dict``: it reads the
outputs of the stages before it under ``Layout(root, dataset)``, writes its own atomically, and
returns a summary (counts, tokens, paths) that the CLI prints, DVC ignores and Dagster shows as
asset metadata. `params` is the whole params.yaml; the stage resolves the dataset's overrides.
"""
from __future__ import annotations

import importlib
import time
from pathlib import Path
from typing import Callable

from .params import dataset_params, load_params

# stage name -> (module, Dagster asset name). dvc.yaml uses the stage names; a test checks that the
# Dagster asset graph and the dvc.yaml stage graph are this same lineage.
STAGES: dict[str, tuple[str, str]] = {
    "prepare": ("cotpd.stages.prepare", "raw_dataset"),
    "captions": ("cotpd.stages.captions", "image_captions"),
    "knowledge": ("cotpd.stages.knowledge", "cot_knowledge"),
    "augment": ("cotpd.stages.augment", "augmented_dataset"),
    "train": ("cotpd.stages.train", "distilled_model"),  # also `baseline_model` (variant=baseline)
    "evaluate": ("cotpd.stages.evaluate", "metrics"),
}

# the student variants, one code path (cotpd.model.student): text-only baseline, knowledge view
# only, and CoTPD (both views + KL, deployed on the text-only prompt view)
VARIANTS = ("baseline", "knowledge", "cotpd")

# upstream stages of each stage (the lineage both orchestrators must reproduce)
DEPENDS: dict[str, list[str]] = {
    "prepare": [],
    "captions": ["prepare"],
    "knowledge": ["prepare", "captions"],
    "augment": ["prepare", "captions", "knowledge"],
    "train": ["prepare", "captions", "knowledge", "augment"],
    "evaluate": ["train"],
}


def stage(name: str) -> Callable[..., dict]:
    """The `run` function of a stage, imported lazily so `cotpd --help` stays fast."""
    module, _ = STAGES[name]
    return importlib.import_module(module).run


def run_stage(name: str, dataset: str, root: str | Path, params: dict | None = None, **resources) -> dict:
    root = Path(root)
    params = params if params is not None else load_params(root)
    t0 = time.perf_counter()
    summary = stage(name)(dataset, root, params, **resources)
    summary = dict(summary or {})
    summary.setdefault("seconds", round(time.perf_counter() - t0, 2))
    return summary


def run_all(datasets: list[str], root: str | Path, params: dict | None = None, stages: list[str] | None = None,
            echo: Callable[[str], None] = print) -> dict[str, dict[str, dict]]:
    """Run every stage for every dataset in lineage order (what `cotpd run` does)."""
    root = Path(root)
    params = params if params is not None else load_params(root)
    out: dict[str, dict[str, dict]] = {}
    for ds in datasets:
        out[ds] = {}
        for name in stages or list(STAGES):
            # the train stage runs once per variant (baseline beside cotpd, as in the paper's tables)
            variants = dataset_params(params, ds)["train"]["variants"] if name == "train" else [None]
            for variant in variants:
                key = f"{name}:{variant}" if variant else name
                echo(f"[{ds}] {key} ...")
                kw = {"variant": variant} if variant else {}
                out[ds][key] = run_stage(name, ds, root, params, **kw)
                echo(f"[{ds}] {key} done in {out[ds][key]['seconds']} s")
    return out
