"""A dataset as the trainer sees it: the prepared splits with captions, CoT knowledge and the
augmented samples joined on, the label set, and train.data_fraction applied."""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from ..config import DatasetParams
from ..errors import ConfigError, DataError
from ..io import read_jsonl, read_text
from ..captions.table import read_caption_table
from ..model.data import attach_context
from ..params import Layout, Params, dataset_params
from ..records import SPLITS, NerSample, Sample, from_dict, iob2_labels, iob2_types, read_records
from .evaluate import map_types


@dataclass
class Corpus:
    dataset: str
    task: str
    labels: list[str]
    train: list[Sample]
    valid: list[Sample]
    test: list[Sample]
    dparams: DatasetParams
    stats: dict = field(default_factory=dict)


def label_set(dp: DatasetParams, layout: Layout, train: list[Sample]) -> list[str]:
    ds = dp.dataset
    if ds.task == "ner":
        return iob2_labels(ds.entity_types or iob2_types(lab for s in train for lab in s.labels))
    rel2id_path = layout.resolve_input(dp, ds.rel2id)
    if rel2id_path is None:  # no map: the relations seen in training, None first
        return ["None"] + sorted({s.relation for s in train} - {"None"})
    try:
        rel2id = json.loads(read_text(rel2id_path))
    except json.JSONDecodeError as exc:
        raise DataError(rel2id_path, exc.lineno, f"not valid JSON: {exc.msg}") from None
    ids = sorted(rel2id.values())
    if ids != list(range(len(ids))):
        raise DataError(rel2id_path, None, f"relation ids must be 0..{len(ids) - 1}, got {ids}")
    return [r for r, _ in sorted(rel2id.items(), key=lambda kv: kv[1])]


def subset(samples: list[Sample], fraction: float, seed: int) -> list[Sample]:
    """A deterministic subset (same seed, same samples), in the original order."""
    if not 0 < fraction <= 1:
        raise ConfigError(f"train.data_fraction must be in (0, 1], got {fraction}")
    if fraction == 1:
        return list(samples)
    keep = set(random.Random(seed).sample(range(len(samples)), max(1, round(len(samples) * fraction))))
    return [s for i, s in enumerate(samples) if i in keep]


def _read_split(layout: Layout, dataset: str, split: str) -> list[Sample]:
    path = layout.raw(split)
    if not path.exists():
        raise DataError(path, None, f"missing: run `cotpd prepare --dataset {dataset}` first")
    return read_records(path)


def _context_rows(layout: Layout) -> tuple[dict[str, str], list[dict]]:
    captions = read_caption_table(layout)
    knowledge = read_jsonl(layout.knowledge) if layout.knowledge.exists() else []
    return captions, knowledge


def load_split(dataset: str, root: Path, params: Params | dict, split: str = "test") -> list[Sample]:
    """One prepared split with captions and knowledge joined (for evaluation)."""
    layout = Layout(Path(root), dataset)
    return attach_context(_read_split(layout, dataset, split), *_context_rows(layout))


def load_corpus(dataset: str, root: Path, params: Params | dict, seed: int | None = None) -> Corpus:
    dp = dataset_params(params, dataset)
    tp, layout = dp.train, Layout(Path(root), dataset)
    seed = dp.seed if seed is None else seed
    splits = {split: _read_split(layout, dataset, split) for split in SPLITS}
    train = subset(splits["train"], tp.data_fraction, seed)
    stats = {"train_original": len(train)}
    if tp.use_augmented and layout.augmented.exists():
        kinds = set(tp.augment_types)
        origins = {s.id for s in train}
        aug = [from_dict(r) for r in read_jsonl(layout.augmented)]
        aug = [s for s in aug if (s.meta or {}).get("aug") in kinds and (s.meta or {}).get("origin", s.id) in origins]
        stats["train_augmented"] = len(aug)
        train = train + aug
    captions, knowledge = _context_rows(layout)
    out = {"train": train, "valid": splits["valid"], "test": splits["test"]}
    for samples in out.values():
        attach_context(samples, captions, knowledge)
    labels = label_set(dp, layout, train)
    if dp.task == "ner":  # defensive: the reader should already have mapped e.g. MISC->OTHER
        types = iob2_types(labels)
        for samples in out.values():
            mapped, _ = map_types([s.labels for s in samples if isinstance(s, NerSample)], dp.dataset.type_map, types)
            for s, m in zip(samples, mapped):
                s.labels = m
    stats.update({f"n_{k}": len(v) for k, v in out.items()},
                 with_knowledge=sum(bool(s.knowledge) for s in train), with_caption=sum(bool(s.caption) for s in train))
    return Corpus(dataset, dp.task, labels, out["train"], out["valid"], out["test"], dp, stats)
