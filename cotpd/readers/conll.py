"""Twitter CoNLL (UMT preprocessing of Twitter-2015/2017): `IMGID:<id>`, `token<TAB>label` lines,
a blank line between tweets. The same reader serves any BIO token file with an optional IMGID line
(SNAP, WikiDiverse-style data): the dataset's params say which entity types exist.

Dataset params (under `datasets.<name>` in params.yaml; defaults in cotpd/config.py DatasetCfg):
  entity_types  allowed types after mapping (null: PER, LOC, ORG, OTHER)
  type_map      renames applied first (MISC -> OTHER by default, so Twitter-2017 models run on 2015)
  strict_iob2   true: an `I-X` not continuing an X entity is an error
  invalid_iob2  with strict_iob2 false: `repair` rewrites it to `B-X`; `keep` leaves it as published.
                Twitter-2015 has 186/53/135 such tags; its published entity counts (6166/1541/5072)
                and every reported score treat them seqeval-strict (ignored), so it uses `keep`.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..config import DatasetCfg
from ..errors import DataError
from ..io import read_text_lines
from ..records import NerSample, iob2_labels
from .captions import normalize_image_id

DEFAULT_TYPES = ("PER", "LOC", "ORG", "OTHER")  # the Twitter-2015/2017 types (entity_types: null)
_DATASET = DatasetCfg.model_fields  # a scheme built without params takes the params' defaults


@dataclass
class NerScheme:
    entity_types: tuple[str, ...] = DEFAULT_TYPES
    type_map: dict[str, str] = field(
        default_factory=lambda: _DATASET["type_map"].get_default(call_default_factory=True))
    strict_iob2: bool = _DATASET["strict_iob2"].default
    invalid_iob2: str = _DATASET["invalid_iob2"].default  # repair | keep (only when strict_iob2 is false)

    @classmethod
    def from_params(cls, ds: DatasetCfg) -> "NerScheme":
        return cls(entity_types=tuple(ds.entity_types or DEFAULT_TYPES), type_map=dict(ds.type_map),
                   strict_iob2=ds.strict_iob2, invalid_iob2=ds.invalid_iob2)

    @property
    def labels(self) -> list[str]:
        """The label set, O first (the order models use for their output layer)."""
        return iob2_labels(self.entity_types)


def entity_spans(labels: list[str]) -> list[tuple[str, int, int]]:
    """(type, start, end) of each entity, end exclusive, with seqeval strict-IOB2 semantics: an entity
    starts at `B-X` and runs over the `I-X` after it; an `I-X` with no `B-X` before it is no entity."""
    spans, n = [], len(labels)
    for i, lab in enumerate(labels):
        if lab[0] == "B":
            inside, end = "I" + lab[1:], i + 1
            while end < n and labels[end] == inside:
                end += 1
            spans.append((lab[2:], i, end))
    return spans


class _LabelMap:
    """Label string -> normalized label, memoized (a few distinct labels, 150k lines)."""

    def __init__(self, scheme: NerScheme):
        self.scheme, self.cache = scheme, {"O": "O"}

    def __call__(self, path: Path, lineno: int, raw: str) -> str:
        norm = self.cache.get(raw)
        if norm is None:
            label = raw.strip()
            prefix, dash, typ = label.partition("-")
            typ = self.scheme.type_map.get(typ, typ)
            if label != "O" and (prefix not in ("B", "I") or not dash or typ not in self.scheme.entity_types):
                raise DataError(path, lineno, f"label {label!r} is outside the scheme "
                                f"(O, B-/I- of {', '.join(self.scheme.entity_types)})")
            norm = self.cache[raw] = "O" if label == "O" else f"{prefix}-{typ}"
        return norm


def read_conll(path: str | Path, split: str, scheme: NerScheme | None = None) -> tuple[list[NerSample], dict]:
    """Read one split. Returns (samples with ids `<split>-<index>`, stats). Raises DataError."""
    path, scheme = Path(path), scheme or NerScheme()
    label_of = _LabelMap(scheme)
    samples: list[NerSample] = []
    stats = Counter()
    tokens: list[str] = []
    labels: list[str] = []
    image_id: str | None = None
    image_line = 0
    prev = "O"

    def flush() -> None:
        nonlocal tokens, labels, image_id, prev
        samples.append(NerSample(id=f"{split}-{len(samples)}", tokens=tokens, labels=labels,
                                 image_id=image_id, split=split))
        tokens, labels, image_id, prev = [], [], None, "O"

    cache, repair = label_of.cache, scheme.invalid_iob2 == "repair"
    for lineno, line in enumerate(read_text_lines(path), start=1):
        token, tab, label = line.partition("\t")
        if tab:  # the common case first: 150k token lines must take well under a second
            if not token or "\t" in label:
                raise DataError(path, lineno, "empty token" if not token else
                                f"expected 2 TAB-separated columns, got {line.count(chr(9)) + 1}")
            lab = cache.get(label) or label_of(path, lineno, label)
            if lab[0] == "I" and prev[2:] != lab[2:]:  # I-X not after B-X / I-X
                if scheme.strict_iob2:
                    raise DataError(path, lineno, f"{lab!r} after {prev!r} breaks strict IOB2 (an entity starts "
                                    f"with B-); set strict_iob2: false to repair or keep such tags")
                if repair:
                    lab = "B" + lab[1:]
                    stats["iob2_repaired"] += 1
                else:
                    stats["iob2_kept"] += 1
            tokens.append(token)
            labels.append(lab)
            prev = lab
        elif line.startswith("IMGID:"):
            if tokens:  # a tweet not closed by a blank line still ends here
                flush()
            elif image_id is not None:
                raise DataError(path, image_line, f"IMGID line for {image_id} has no token lines")
            raw = line[6:].strip()
            if not raw:
                raise DataError(path, lineno, "empty IMGID")
            image_id, image_line = normalize_image_id(raw), lineno
        # blank = nothing but ASCII whitespace; a lone U+00A0 is a real token (valid.txt has one)
        elif not line.strip(" \r\n"):
            if tokens:
                flush()
            elif image_id is not None:
                raise DataError(path, image_line, f"IMGID line for {image_id} has no token lines")
        else:
            raise DataError(path, lineno, f"missing TAB between token and label in {line!r}")
    if tokens:
        flush()
    elif image_id is not None:
        raise DataError(path, image_line, f"IMGID line for {image_id} has no token lines")
    if not samples:
        raise DataError(path, 1, f"empty split {split!r}: no sentences")
    return samples, {**ner_stats(samples), "iob2_repaired": stats["iob2_repaired"], "iob2_kept": stats["iob2_kept"]}


def ner_stats(samples: list[NerSample]) -> dict:
    """Sentences, tokens, entities per type (strict IOB2), image ids: the prepare stage's summary."""
    types = Counter(t for s in samples for t, _, _ in entity_spans(s.labels))
    images = {s.image_id for s in samples if s.image_id}
    return {"sentences": len(samples), "tokens": sum(len(s.tokens) for s in samples),
            "entities": sum(types.values()), "entities_by_type": dict(sorted(types.items())),
            "image_ids": len(images), "no_image_id": sum(1 for s in samples if not s.image_id)}
