"""Typed records shared by every stage, and their normalized JSONL form.

Readers (cotpd.readers) turn the published formats into these; later stages only ever read the
normalized JSONL written by `write_records`, so a new dataset format needs a reader and nothing else.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Union

from .io import iter_jsonl, write_jsonl

SPLITS = ("train", "valid", "test")
GRAINS = ("noun", "sentence", "multimodal")  # the paper's three CoT grains (Sec. 3.2)


@dataclass
class NerSample:
    """One tweet for MNER: word tokens with IOB2 labels, the id of its image (or None)."""

    id: str
    tokens: list[str]
    labels: list[str]
    image_id: str | None = None
    split: str = "train"
    caption: str | None = None
    knowledge: dict[str, str] = field(default_factory=dict)  # grain -> text
    meta: dict = field(default_factory=dict)  # provenance: {"origin": id, "aug": "style"|...}

    task = "ner"

    @property
    def text(self) -> str:
        return " ".join(self.tokens)


@dataclass
class Span:
    """An entity mention: tokens[start:end] (end exclusive), with its surface string."""

    start: int
    end: int
    name: str
    type: str | None = None


@dataclass
class ReSample:
    """One MNRE instance: tokens, head and tail spans, the relation between them."""

    id: str
    tokens: list[str]
    head: Span
    tail: Span
    relation: str
    image_id: str | None = None
    split: str = "train"
    caption: str | None = None
    knowledge: dict[str, str] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    task = "re"

    @property
    def text(self) -> str:
        return " ".join(self.tokens)


Sample = Union[NerSample, ReSample]


def iob2_labels(entity_types: Iterable[str]) -> list[str]:
    """The IOB2 label list of a set of entity types: O first, then B-/I- per type, in the given order
    (a model's output layer follows this order, so it is part of a trained student)."""
    return ["O"] + [f"{p}-{t}" for t in entity_types for p in ("B", "I")]


def iob2_types(labels: Iterable[str]) -> list[str]:
    """The entity types named in IOB2 labels, sorted (the inverse of `iob2_labels`, up to order)."""
    return sorted({lab[2:] for lab in labels if lab != "O"})


def to_dict(sample: Sample) -> dict:
    d = asdict(sample)
    d["task"] = sample.task
    return d


def from_dict(d: dict) -> Sample:
    d = dict(d)
    task = d.pop("task", None) or ("re" if "relation" in d else "ner")
    if task == "re":
        d["head"] = Span(**d["head"])
        d["tail"] = Span(**d["tail"])
        return ReSample(**d)
    return NerSample(**d)


def write_records(path: str | Path, samples: Iterable[Sample]) -> int:
    """Write samples as normalized JSONL (atomically)."""
    return write_jsonl(path, (to_dict(s) for s in samples))


def read_records(path: str | Path) -> list[Sample]:
    """The samples of a normalized JSONL file (a bad line raises DataError naming the file and line)."""
    return [from_dict(row) for row in iter_jsonl(path)]
