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

import yaml

from pydantic import BaseModel, ValidationError

from .config import DatasetParams, ParamsFile
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


def read_params(root: str | Path | None = None, path: str | Path | None = None) -> dict:
    """params.yaml as written (a plain mapping, not yet validated): what the bench and tests edit
    before handing it to `Params`."""
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


def load_params(root: str | Path | None = None, path: str | Path | None = None,
                sets: list[str] | None = None) -> "Params":
    """params.yaml with the command line's `--set KEY=VALUE` applied, validated once."""
    root = Path(root) if root else find_root()
    path = Path(path) if path else root / "params.yaml"
    source = f"{path} with --set {' '.join(sets)}" if sets else str(path)
    return Params(apply_set(read_params(root, path), parse_set(sets or [])), source=source)


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


def resolve_dataset(params: dict, dataset: str) -> dict:
    """One dataset's view as a plain mapping: the global sections with its `overrides` merged in."""
    if dataset not in params["datasets"]:
        raise ConfigError(f"unknown dataset {dataset!r}; params.yaml defines {sorted(params['datasets'])}")
    ds = params["datasets"][dataset]
    merged = deep_merge({k: v for k, v in params.items() if k != "datasets"}, ds.get("overrides") or {})
    merged["dataset"] = {**{k: v for k, v in ds.items() if k != "overrides"}, "name": dataset}
    return merged


# --- errors that name the key -------------------------------------------------------------------
_TYPE_TAGS = {"str", "int", "float", "bool", "none", "dict", "list"}


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The section model at a key path (to list the keys it takes)."""
    for key in loc:
        field = model.model_fields.get(key) or next(
            (f for f in model.model_fields.values() if f.alias == key), None)
        if field is None:
            return None
        ann, model = field.annotation, None
        for cand in (ann, *getattr(ann, "__args__", ())):
            if isinstance(cand, type) and issubclass(cand, BaseModel):
                model = cand
            elif isinstance(getattr(cand, "__args__", None), tuple):  # dict[str, Model]
                model = next((a for a in cand.__args__ if isinstance(a, type) and issubclass(a, BaseModel)), model)
        if model is None:
            return None
    return model


def _key_path(loc: tuple) -> tuple:
    """A pydantic error location without its union-member tags (`str`, `SplitFiles`, `literal[...]`)."""
    return tuple(x for x in loc if not (isinstance(x, str) and (x in _TYPE_TAGS or x[:1].isupper() or "[" in x)))


def validate(model: type[BaseModel], raw: dict, source: str, overrides: dict | None = None,
             dataset: str | None = None) -> BaseModel:
    """`model` validated from `raw`; a ConfigError naming each bad key path and what it expects.
    For a dataset's resolved view, a key that came from its `overrides` is named as such."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = _key_path(err["loc"])
            where = ".".join(map(str, loc))
            if dataset is not None:
                if loc[:1] == ("dataset",):
                    where = ".".join(map(str, ("datasets", dataset, *loc[1:])))
                elif _has_path(overrides or {}, loc):
                    where = f"datasets.{dataset}.overrides.{where}"
            if err["type"] == "extra_forbidden":
                sect = _model_at(model, loc[:-1]) if len(loc) > 1 else model
                keys = sorted(f.alias or k for k, f in sect.model_fields.items()) if sect else []
                lines.append(f"{where}: unknown key" + (f" (allowed: {', '.join(keys)})" if keys else ""))
            else:
                lines.append(f"{where}: {err['msg']} (got {err.get('input')!r})")
        raise ConfigError(f"{source}: invalid params:\n  " + "\n  ".join(dict.fromkeys(lines))) from None


def _has_path(tree: dict, loc: tuple) -> bool:
    for key in loc:
        if not isinstance(tree, dict) or key not in tree:
            return False
        tree = tree[key]
    return True


class Params:
    """Validated params: the typed file (`.file`) and every dataset's typed resolved view. `.raw` is
    the mapping it was built from (hashed for the bench, logged to MLflow)."""

    def __init__(self, raw: dict, source: str = "params.yaml"):
        if not isinstance(raw, dict) or not isinstance(raw.get("datasets"), dict):
            raise ConfigError(f"{source}: expected a mapping with a 'datasets' section")
        self.raw, self.source = raw, source
        self.file: ParamsFile = validate(ParamsFile, raw, source)
        self.views: dict[str, DatasetParams] = {
            name: validate(DatasetParams, resolve_dataset(raw, name), source,
                           overrides=(raw["datasets"][name] or {}).get("overrides") or {}, dataset=name)
            for name in raw["datasets"]}

    def dataset(self, name: str) -> DatasetParams:
        if name not in self.views:
            raise ConfigError(f"unknown dataset {name!r}; {self.source} defines {sorted(self.views)}")
        return self.views[name]

    @property
    def datasets(self) -> list[str]:
        return list(self.views)


def as_params(params: "Params | dict | None", root: str | Path | None = None) -> Params:
    """A `Params` from a `Params` (as is), a params mapping (validated now) or None (params.yaml)."""
    if isinstance(params, Params):
        return params
    return load_params(root) if params is None else Params(params)


def dataset_params(params: "Params | dict", dataset: str) -> DatasetParams:
    """The typed params a stage sees for one dataset."""
    return as_params(params).dataset(dataset)


def params_hash(params: dict | BaseModel) -> str:
    """A short stable hash of resolved params (logged to MLflow so runs can be grouped). A model is
    hashed as written (its set fields), so the hash of a params.yaml entry does not move when the
    schema gains a key with a default."""
    if isinstance(params, BaseModel):
        params = params.model_dump(mode="json", by_alias=True, exclude_unset=True)
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
    def data_docs(self) -> Path:
        """The Great Expectations Data Docs site of the augmented set (open index.html)."""
        return self.base / "data_docs"

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

    def resolve_input(self, dp: DatasetParams, rel: str | None) -> Path | None:
        """A dataset input path: relative entries are relative to the dataset's `root`."""
        if rel is None:
            return None
        ds_root = Path(dp.dataset.root)
        ds_root = ds_root if ds_root.is_absolute() else self.root / ds_root
        p = Path(rel)
        return p if p.is_absolute() else ds_root / p


def absolute_roots(params: dict, root: Path, data: Path | None = None) -> dict:
    """Every dataset root made absolute (a run in another folder still finds its data), the real
    datasets (roots outside the project, `../...`) moved to `data`/<their folder name> when given."""
    for ds in params["datasets"].values():
        rel = Path(ds["root"])
        if data is not None and ".." in rel.parts:
            ds["root"] = str((data / rel.name).resolve())
        elif not rel.is_absolute():
            ds["root"] = str((root / rel).resolve())
    return params
