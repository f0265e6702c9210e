"""MNRE (thecharm/MNRE `mnre_txt/`): one Python dict literal per line, NOT JSON:
`{'token': [...], 'h': {'name': ..., 'pos': [start, end)}, 't': {...}, 'img_id': ..., 'relation': ...}`.

Lines are parsed with `ast.literal_eval` only (see captions.literal_dict): a line holding code is
refused, never run.

Entity names: in the published MNRE-2 files every `name` equals its span's tokens joined by one
space (checked on all 15,485 instances). We accept a name that differs from that ONLY in whitespace
(e.g. `New York` vs `New  York`, or a detokenized `U.S.-based`), count it as `name_spacing`, and keep
the tokens' spelling; any other difference means the span points at the wrong tokens: an error.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from ..errors import ConfigError, DataError
from ..io import read_json, read_text_lines
from ..records import ReSample, Span
from .captions import literal_dict, normalize_image_id

KEYS = frozenset({"token", "h", "t", "img_id", "relation"})
NONE_RELATION = "None"


def read_rel2id(path: str | Path) -> dict[str, int]:
    """The relation -> id map; ids must be distinct integers (None = 0 in MNRE)."""
    path = Path(path)
    rel2id = read_json(path)
    if not isinstance(rel2id, dict) or not rel2id:
        raise DataError(path, 1, "expected a non-empty JSON object relation -> id")
    if not all(isinstance(v, int) for v in rel2id.values()) or len(set(rel2id.values())) != len(rel2id):
        raise DataError(path, 1, "relation ids must be distinct integers")
    return rel2id


def span_types(relation: str) -> tuple[str | None, str | None]:
    """`/per/loc/place_of_birth` -> ('per', 'loc'): MNRE labels name the head and tail types."""
    parts = relation.split("/")
    return (parts[1], parts[2]) if len(parts) == 4 else (None, None)


def _span(path: Path, lineno: int, key: str, value, tokens: list[str], stats: Counter, htype) -> Span:
    if not isinstance(value, dict) or not isinstance(value.get("name"), str) or "pos" not in value:
        raise DataError(path, lineno, f"{key!r} must be a dict with 'name' (string) and 'pos' ([start, end])")
    pos = value["pos"]
    if (not isinstance(pos, (list, tuple)) or len(pos) != 2
            or not all(isinstance(p, int) and not isinstance(p, bool) for p in pos)):
        raise DataError(path, lineno, f"{key!r} pos must be two integers [start, end), got {pos!r}")
    start, end = pos
    if start >= end:
        raise DataError(path, lineno, f"{key!r} span [{start}, {end}) is empty")
    if not 0 <= start < end <= len(tokens):
        raise DataError(path, lineno, f"{key!r} span [{start}, {end}) lies outside the {len(tokens)} tokens")
    surface = " ".join(tokens[start:end])
    name = value["name"]
    if name != surface:
        if "".join(name.split()) != "".join(surface.split()):
            raise DataError(path, lineno, f"{key!r} name {name!r} does not match its tokens {surface!r}")
        stats["name_spacing"] += 1
    return Span(start=start, end=end, name=surface, type=htype)


def parse_instance(path: Path, lineno: int, line: str, rel2id: dict[str, int], stats: Counter) -> dict:
    row = literal_dict(path, lineno, line)
    missing, extra = KEYS - row.keys(), row.keys() - KEYS
    if missing:
        raise DataError(path, lineno, f"missing key(s) {sorted(missing)}")
    if extra:
        raise DataError(path, lineno, f"unexpected key(s) {sorted(map(str, extra))}")
    tokens = row["token"]
    if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) and t for t in tokens):
        raise DataError(path, lineno, "'token' must be a non-empty list of non-empty strings")
    relation = row["relation"]
    if relation not in rel2id:
        raise DataError(path, lineno, f"relation {relation!r} is not in rel2id.json")
    if not isinstance(row["img_id"], str) or not row["img_id"].strip():
        raise DataError(path, lineno, "'img_id' must be a non-empty string")
    htype, ttype = span_types(relation)
    return {"tokens": tokens, "relation": relation, "image_id": normalize_image_id(row["img_id"]),
            "head": _span(path, lineno, "h", row["h"], tokens, stats, htype),
            "tail": _span(path, lineno, "t", row["t"], tokens, stats, ttype)}


def read_mnre(path: str | Path, split: str, rel2id: dict[str, int]) -> tuple[list[ReSample], dict]:
    """Read one split. Returns (samples with ids `<split>-<index>`, stats). Raises DataError."""
    path = Path(path)
    if not rel2id:
        raise ConfigError("read_mnre needs the relation map (rel2id.json)")
    stats: Counter = Counter()
    samples = []
    for lineno, line in enumerate(read_text_lines(path), start=1):
        if not line.strip():
            continue
        fields = parse_instance(path, lineno, line, rel2id, stats)
        samples.append(ReSample(id=f"{split}-{len(samples)}", split=split, **fields))
    if not samples:
        raise DataError(path, 1, f"empty split {split!r}: no instances")
    return samples, {**re_stats(samples), "name_spacing": stats["name_spacing"]}


def re_stats(samples: list[ReSample]) -> dict:
    rels = Counter(s.relation for s in samples)
    return {"instances": len(samples), "tokens": sum(len(s.tokens) for s in samples),
            "relations": dict(sorted(rels.items())), "relation_types": len(rels),
            "none": rels.get(NONE_RELATION, 0), "image_ids": len({s.image_id for s in samples})}
