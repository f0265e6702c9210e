"""The pipeline's stages, in lineage order, each one importable function.

Every stage has the signature ``run(dataset, root, params, **resources) -> dict``: it reads the
outputs of the stages before it under ``Layout(root, dataset)``, writes its own atomically, and
returns a summary (counts, tokens, paths) that the CLI prints, DVC ignores and Dagster shows as
asset metadata. `params` is the whole params.yaml; the stage resolves the dataset's overrides.
"""
from __future__ import annotations

import hashlib
import importlib
import time
from pathlib import Path
from typing import Callable

from .params import as_params, dataset_params

PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # the checkout that holds cotpd/ (and dvc.yaml)

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

# the code each stage's output depends on (files or folders under the project root, beside the prompt
# files it reads: cotpd.prompts.stage_prompts). The one map of it: dvc.yaml's `deps` list exactly
# these (tests/test_lineage.py checks it) and Dagster's code versions hash exactly these, so both
# call the same training stale. The schema (config.py) holds the defaults of every stage.
SHARED_CODE = ("cotpd/config.py", "cotpd/params.py", "cotpd/records.py")
CODE: dict[str, tuple[str, ...]] = {
    "prepare": ("cotpd/stages/prepare.py", "cotpd/readers", "cotpd/sample"),
    "captions": ("cotpd/stages/captions.py", "cotpd/captions", "cotpd/readers"),
    "knowledge": ("cotpd/stages/knowledge.py", "cotpd/knowledge", "cotpd/llm", "cotpd/prompts.py", "cotpd/readers",
                  "cotpd/captions/table.py"),
    "augment": ("cotpd/stages/augment.py", "cotpd/augment", "cotpd/llm", "cotpd/prompts.py",
                "cotpd/captions/table.py"),
    "train": ("cotpd/stages/train.py", "cotpd/training", "cotpd/model"),
    "evaluate": ("cotpd/stages/evaluate.py", "cotpd/training", "cotpd/model", "cotpd/plots.py"),
}


def code_deps(stage: str) -> tuple[str, ...]:
    """Every code path (relative to the project root) that decides `stage`'s output."""
    return CODE[stage] + SHARED_CODE


def code_hash(stage: str, root: str | Path = PACKAGE_ROOT) -> str:
    """A hash of the bytes of every file under code_deps(stage) (caches and bytecode left out)."""
    h = hashlib.sha256()
    for rel in code_deps(stage):
        path = Path(root) / rel
        files = sorted(path.rglob("*")) if path.is_dir() else [path]
        for f in files:
            if f.is_file() and "__pycache__" not in f.parts:
                h.update(f.relative_to(root).as_posix().encode())
                h.update(f.read_bytes())
    return h.hexdigest()[:12]


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
    """The `run` function of a stage. Imported by name, when it runs: a stage module pulls in torch,
    mlflow or the LLM client, which `cotpd --help` must not load."""
    module, _ = STAGES[name]
    return importlib.import_module(module).run


def run_stage(name: str, dataset: str, root: str | Path, params: dict | None = None, **resources) -> dict:
    root = Path(root)
    params = as_params(params, root)
    t0 = time.perf_counter()
    summary = stage(name)(dataset, root, params, **resources)
    summary = dict(summary or {})
    summary.setdefault("seconds", round(time.perf_counter() - t0, 2))
    return summary


def run_all(datasets: list[str], root: str | Path, params: dict | None = None, stages: list[str] | None = None,
            echo: Callable[[str], None] = print) -> dict[str, dict[str, dict]]:
    """Run every stage for every dataset in lineage order (what `cotpd run` does)."""
    root = Path(root)
    params = as_params(params, root)
    out: dict[str, dict[str, dict]] = {}
    for ds in datasets:
        out[ds] = {}
        for name in stages or list(STAGES):
            # the train stage runs once per variant (baseline beside cotpd, as in the paper's tables)
            variants = dataset_params(params, ds).train.variants if name == "train" else [None]
            for variant in variants:
                key = f"{name}:{variant}" if variant else name
                echo(f"[{ds}] {key} ...")
                kw = {"variant": variant} if variant else {}
                out[ds][key] = run_stage(name, ds, root, params, **kw)
                echo(f"[{ds}] {key} done in {out[ds][key]['seconds']} s")
    return out
