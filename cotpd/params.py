"""params.yaml: loading, per-dataset overrides, and where every stage reads and writes.

params.yaml is the single home of hyperparameters; DVC and Dagster both call `load_params`.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError


def find_root(start: str | Path | None = None) -> Path:
    """The project root: $COTPD_ROOT, else the nearest folder above `start` holding params.yaml."""
    if os.environ.get("COTPD_ROOT"):
        return Path(os.environ["COTPD_ROOT"]).resolve()
    here = Path(start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / "params.yaml").exists():
            return d
    raise ConfigError(f"no params.yaml found in {here} or above (set COTPD_ROOT)")


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def load_params(root: str | Path | None = None, path: str | Path | None = None) -> dict:
    root = Path(root) if root else find_root()
    path = Path(path) if path else root / "params.yaml"
    try:
        params = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(params, dict) or "datasets" not in params:
        raise ConfigError(f"{path}: expected a mapping with a 'datasets' section")
    return params


def parse_set(items: list[str]) -> dict:
    """`--set train.epochs=2 --set llm.mode=record` -> nested dict (values parsed as YAML)."""
    out: dict = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set expects key.path=value, got {item!r}")
        key, value = item.split("=", 1)
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = yaml.safe_load(value)
    return out


def apply_set(params: dict, over: dict) -> dict:
    """params with command-line `--set` overrides applied. They are the last word: they also go into
    every dataset's `overrides`, which would otherwise win (`--set train.epochs=6` on mnre, whose
    overrides say 4). `--set datasets.<key>...` edits one dataset as written."""
    out = deep_merge(params, over)
    for ds in out["datasets"].values():
        own = (ds.get("overrides") or {}) if isinstance(ds, dict) else {}
        # only the sections a dataset overrides can hide a --set; the rest reach it through the globals
        hidden = {k: v for k, v in (over or {}).items() if k != "datasets" and k in own}
        if hidden:
            ds["overrides"] = deep_merge(own, hidden)
    return out


def dataset_params(params: dict, dataset: str) -> dict:
    """The params a stage sees for one dataset: the global sections with its `overrides` merged in."""
    if dataset not in params["datasets"]:
        raise ConfigError(f"unknown dataset {dataset!r}; params.yaml defines {sorted(params['datasets'])}")
    ds = params["datasets"][dataset]
    merged = deep_merge({k: v for k, v in params.items() if k != "datasets"}, ds.get("overrides") or {})
    merged["dataset"] = {**{k: v for k, v in ds.items() if k != "overrides"}, "name": dataset}
    return merged


def params_hash(params: dict) -> str:
    """A short stable hash of resolved params (logged to MLflow so runs can be grouped)."""
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Layout:
    """Where each stage of one dataset writes, under <root>/outputs/<dataset>/ (DVC outputs)."""

    root: Path
    dataset: str

    @property
    def base(self) -> Path:
        return self.root / "outputs" / self.dataset

    def raw(self, split: str) -> Path:
        return self.base / "raw" / f"{split}.jsonl"

    @property
    def raw_dir(self) -> Path:
        return self.base / "raw"

    @property
    def captions(self) -> Path:
        return self.base / "captions.jsonl"

    @property
    def knowledge(self) -> Path:
        return self.base / "knowledge.jsonl"

    @property
    def augmented(self) -> Path:
        return self.base / "augmented.jsonl"

    @property
    def rejected(self) -> Path:
        """Augmentations the LLM or our checks refused, each with its reason."""
        return self.base / "rejected.jsonl"

    @property
    def quarantine(self) -> Path:
        """Rows that failed the Great Expectations suite, each with the expectation that failed."""
        return self.base / "quarantine.jsonl"

    def ledger_for(self, stage: str) -> Path:
        """LLM response ledger of one stage (knowledge, augment, captions): committed for the
        sample, a persisted DVC output otherwise. One file per stage because a DVC output belongs
        to exactly one stage."""
        return self.root / "ledger" / self.dataset / f"{stage}.jsonl"

    def ensure_ledger(self, stage: str) -> Path:
        """The stage's ledger, created empty when absent: dvc.yaml declares it as the stage's output
        even for a run that asks the LLM nothing (precomputed knowledge, augmentation switched off)."""
        path = self.ledger_for(stage)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(exist_ok=True)
        return path

    def model_dir(self, variant: str) -> Path:
        return self.base / "models" / variant

    def metrics(self, variant: str) -> Path:
        return self.base / "metrics" / f"{variant}.json"

    @property
    def metrics_summary(self) -> Path:
        return self.base / "metrics.json"

    def resolve_input(self, params: dict, rel: str | None) -> Path | None:
        """A dataset input path: relative entries are relative to the dataset's `root`."""
        if rel is None:
            return None
        ds_root = Path(params["dataset"]["root"])
        ds_root = ds_root if ds_root.is_absolute() else self.root / ds_root
        p = Path(rel)
        return p if p.is_absolute() else ds_root / p
