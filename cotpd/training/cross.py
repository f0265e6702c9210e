"""Cross-dataset evaluation: a trained student scored on any dataset of the same task.

    cotpd evaluate --model outputs/twitter2017/models/cotpd --dataset twitter2015
    cotpd evaluate --model runs:/<run id>/model --dataset sample_b --split valid --out m.json

Types: the dataset's gold entity types (NER) or relations (RE) are renamed into the labels the model
can emit (its saved config.json), through both datasets' `type_map` (params.yaml
`datasets.<ds>.type_map`: published name -> that dataset's name). A gold type t becomes the first of
  1. t itself, when the model emits it;
  2. the dataset's type_map[t] (records prepared before the dataset's map named it so);
  3. the model's dataset's type_map[t] (the model's dataset renames that published name the same way);
  4. the published name(s) the dataset's map renamed into t, as they are or through the model's
     dataset's map (the dataset says PERSON where the model's kept the published PER).
A gold type none of these reaches is unmapped: an error naming the model, the dataset and the types
(`--unmapped error`, the default), or with `--unmapped miss` its gold entities stay and count as
misses — never dropped. A type the dataset's map made of two published names that the model
keeps apart (rule 4 reaching two model types) is always an error.

Writes the evaluate stage's metrics JSON (overall, per type, scheme, n) plus the mapping used
(type_map), the gold entities of unmapped types (unknown_gold_types) and what was scored, to
outputs/<dataset>/metrics/cross/<trained on>_<variant>[_<run-id / model-name>][_<split>].json, or --out.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator, Literal, Sequence

from ..errors import ConfigError
from ..io import write_json
from ..model.student import Student, load_student
from ..params import Layout, Params, as_params, dataset_params
from ..readers.conll import DEFAULT_TYPES
from ..records import Sample, iob2_types
from ..serving.registry import is_model_uri, student_folder, tracking_uri
from . import evaluate as M
from .corpus import load_split
from .loop import resolve_device

Unmapped = Literal["error", "miss"]


def type_mapping(model_types: Sequence[str], gold_types: Sequence[str], dataset_map: dict[str, str],
                 model_map: dict[str, str]) -> dict[str, list[str]]:
    """gold type -> the model types it may become, by the first rule of the module docstring that
    reaches one (an empty list: unmapped; several: ambiguous)."""
    known = set(model_types)

    def via_model_map(name: str) -> str | None:
        if name in known:
            return name
        return model_map[name] if model_map.get(name) in known else None

    out = {}
    for t in gold_types:
        direct = [c for c in (t if t in known else None, dataset_map.get(t), model_map.get(t)) if c in known]
        if direct:
            out[t] = direct[:1]
            continue
        published = sorted(raw for raw, ours in dataset_map.items() if ours == t)
        out[t] = sorted({c for c in map(via_model_map, published) if c})
    return out


def gold_types(task: str, declared: Sequence[str] | None, samples: Sequence[Sample]) -> list[str]:
    """The dataset's types: NER its entity_types (the reader's default when null) and any other type
    its records carry; RE the relations of its records."""
    if task == "re":
        return sorted({s.relation for s in samples})
    return sorted(set(declared or DEFAULT_TYPES) | set(iob2_types(lab for s in samples for lab in s.labels)))


def model_label(ref: str, model: Student) -> str:
    """How messages name a model: its reference, variant and training dataset."""
    return f"model {ref} ({model.variant}, {model.task}, trained on {trained_on(model) or 'an unknown dataset'})"


def trained_on(model: Student) -> str | None:
    return ((getattr(model, "saved_config", None) or {}).get("params") or {}).get("dataset")


def resolve_types(model: Student, ref: str, dataset: str, params: Params | dict, samples: Sequence[Sample],
                  unmapped: Unmapped = "error") -> dict[str, str]:
    """The complete gold type -> model type map for scoring `model` on `samples` of `dataset` (an
    unmapped type maps to itself with unmapped="miss", so its entities count as misses)."""
    params = as_params(params)
    dp = dataset_params(params, dataset)
    if model.task != dp.task:
        raise ConfigError(f"{model_label(ref, model)} and dataset {dataset!r} ({dp.task}) are different tasks")
    source = trained_on(model)
    model_map = dataset_params(params, source).dataset.type_map if source in params.datasets else {}
    model_types = iob2_types(model.labels) if model.task == "ner" else model.labels
    options = type_mapping(model_types, gold_types(dp.task, dp.dataset.entity_types, samples),
                           dp.dataset.type_map, model_map)
    what = "entity types" if dp.task == "ner" else "relations"
    ambiguous = {t: c for t, c in options.items() if len(c) > 1}
    if ambiguous:
        raise ConfigError(f"{model_label(ref, model)} on dataset {dataset!r}: the type maps send gold {what} "
                          f"to several model types: {ambiguous}; fix datasets.{dataset}.type_map in params.yaml")
    missing = sorted(t for t, c in options.items() if not c)
    if missing and unmapped == "error":
        raise ConfigError(
            f"{model_label(ref, model)} on dataset {dataset!r}: gold {what} {missing} map to none of the model's "
            f"{what} {sorted(model_types)}; add them to datasets.{dataset}.type_map in params.yaml, or pass "
            f"--unmapped miss to count their gold entities as misses")
    return {t: (c[0] if c else t) for t, c in options.items()}


@contextlib.contextmanager
def open_model(ref: str, root: Path, params: Params | dict) -> Iterator[tuple[Path, str]]:
    """(student folder, short name for file names) of a model reference: a folder, or an MLflow
    model URI (runs:/<id>/model, models:/<name>@<alias>, ...) resolved in params' tracking store and
    downloaded for the duration of the block (cotpd.serving.registry)."""
    if not is_model_uri(ref):
        path = Path(ref)
        if not (path / "config.json").exists():
            raise ConfigError(f"model {ref}: not a trained student folder (no config.json) nor an MLflow "
                              f"model URI (runs:/<run id>/model, models:/<name>@<alias>)")
        yield path, ""
        return
    store = tracking_uri(root, as_params(params).file.tracking.uri)
    scheme, _, rest = ref.partition(":/")
    tag = f"{'run' if scheme == 'runs' else 'model'}-" + "".join(c if c.isalnum() else "-" for c in rest.strip("/"))[:40]
    with student_folder(ref, store) as folder:
        yield folder, tag


def default_path(root: Path, dataset: str, model: Student, tag: str, split: str) -> Path:
    name = "_".join(x for x in (trained_on(model) or "unknown", model.variant, tag,
                                split if split != "test" else "") if x)
    return Layout(root, dataset).base / "metrics" / "cross" / f"{name}.json"


def score(model: Student, ref: str, dataset: str, root: Path, params: Params | dict, split: str = "test",
          unmapped: Unmapped = "error") -> dict:
    """The metrics of `model` on `split` of `dataset` (text-only inference, as deployed), with the
    type map used, the gold entities no model type covers, and what was scored."""
    samples = load_split(dataset, root, params, split)
    mapping = resolve_types(model, ref, dataset, params, samples, unmapped)
    m = M.cross_evaluate(model, samples, mapping, "prompt")
    m.update(variant=model.variant, dataset=dataset, split=split, model=ref, trained_on=trained_on(model),
             labels=model.labels, unmapped=unmapped)
    return m


def evaluate_model(dataset: str, root: Path, params: Params | dict, ref: str, split: str = "test",
                   out: Path | None = None, unmapped: Unmapped = "error") -> dict:
    """`cotpd evaluate --model`: score, write the metrics JSON, return a summary naming its path."""
    root = Path(root)
    dp = dataset_params(params, dataset)
    with open_model(ref, root, params) as (folder, tag):
        model = load_student(folder, resolve_device(dp.train.device))
        m = score(model, ref, dataset, root, params, split, unmapped)
        m["model_dir"] = str(folder) if not tag else ref
        path = Path(out) if out else default_path(root, dataset, model, tag, split)
    write_json(path, m)
    return {"dataset": dataset, "split": split, "model": ref, "trained_on": m["trained_on"],
            "variant": m["variant"], "f1": m["f1"], "type_map": m["type_map"],
            "unknown_gold_types": m["unknown_gold_types"], "metrics": str(path)}
