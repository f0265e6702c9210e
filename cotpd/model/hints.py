"""Entity-type hints for the knowledge view (train.knowledge_hints, issue #19's "entity-type hints").

The CoT knowledge often lists the entities it sees, each with a type in parentheses: PGIM's ChatGPT
knowledge for Twitter-2015 starts "Named entities: 1. George Zimmerman (person) 2. Tower Bridge
(location) ...". Read as plain text, the small encoder has to match such a name back to the tweet's
words itself. A hint does that match for it: every text word of the knowledge view that a listed
name covers gets B-/I- of the name's coarse type, embedded and added to its input embedding
(cotpd.model.student), as the case features are. The prompt view never gets hints: inference stays
text only, and the student learns them only through the teacher's distribution.

Only numbered or bulleted "name (type)" items count, so that a parenthesis in the reasoning is not
read as a type. Knowledge without such a list gives no hint at all (every text word "unnamed").
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

# coarse types, tried in this order on the LLM's free-form type ("person/handle", "news organization",
# "brand/company", "sports team" ...): the first class with a keyword in it wins. A type that names
# no thing ("date", "year", "number") gives no hint; any other type is "other".
COARSE: dict[str, tuple[str, ...]] = {
    "person": ("person", "people", "handle", "user", "celebrit", "athlete", "artist", "musician", "singer",
               "politician", "actor", "actress", "player", "rapper", "author", "character"),
    "organization": ("organi", "company", "brand", "team", "band", "business", "club", "institution",
                     "agency", "party", "league", "school", "university", "government", "media", "network",
                     "news", "publication", "channel", "station", "group"),
    "location": ("location", "place", "city", "country", "state", "region", "venue", "landmark", "geo",
                 "street", "stadium", "continent", "island", "river", "park", "area"),
}
NOT_NAMED = ("date", "year", "time", "number", "day", "month", "quantity", "money", "percent")
# hint ids: 0 special tokens, padding and the context segment; 1 a text word no listed name covers
HINTS = ("none", "unnamed", *(f"{bio}-{t}" for t in (*COARSE, "other") for bio in "BI"))
UNNAMED = HINTS.index("unnamed")

_ITEM = re.compile(r"(?:\d+\.|[-*\u2022])\s*([^()\n]+?)\s*\(([^()]{1,60})\)")


def coarse_type(kind: str) -> str | None:
    """The coarse class of a free-form entity type, or None for a type that names no thing."""
    kind = kind.lower()
    for coarse, keys in COARSE.items():
        if any(k in kind for k in keys):
            return coarse
    return None if any(re.search(rf"\b{k}", kind) for k in NOT_NAMED) else "other"


def named(knowledge: str) -> list[tuple[list[str], str]]:
    """(name's words, coarse type) of each listed item, in the order listed."""
    out = []
    for m in _ITEM.finditer(knowledge):
        kind = coarse_type(m.group(2))
        words = [w for w in (_norm(w) for w in m.group(1).split()) if w]
        if kind and words:
            out.append((words, kind))
    return out


def word_hints(words: Sequence[str], knowledge: str) -> list[int]:
    """A hint id (HINTS) per word: every occurrence of a listed name in `words` (case and leading @/#
    ignored) is marked B-/I-type, longer names first; a word keeps the first mark it gets."""
    norm = [_norm(w) for w in words]
    out = [UNNAMED] * len(words)
    for name, kind in sorted(named(knowledge), key=lambda item: -len(item[0])):
        n = len(name)
        for i in range(len(norm) - n + 1):
            if norm[i:i + n] == name and all(h == UNNAMED for h in out[i:i + n]):
                out[i:i + n] = [HINTS.index(f"B-{kind}")] + [HINTS.index(f"I-{kind}")] * (n - 1)
    return out


def coverage(samples: Sequence, coarse_of: Mapping[str, str]) -> dict[str, int]:
    """How far the hints reach on labelled NER samples (tokens, IOB2 labels, knowledge): of the gold
    entities ("total"), how many start on a B- hint ("started") and how many with the coarse type
    that `coarse_of` maps the gold type to ("typed"). A check of a user's own knowledge before training."""
    out = {"total": 0, "started": 0, "typed": 0}
    for s in samples:
        for lab, hint in zip(s.labels, word_hints(s.tokens, " ".join(s.knowledge.values()))):
            if lab.startswith("B-"):
                out["total"] += 1
                out["started"] += HINTS[hint].startswith("B-")
                out["typed"] += HINTS[hint] == f"B-{coarse_of[lab[2:]]}"
    return out


def _norm(word: str) -> str:
    return word.lower().lstrip("@#").strip(".,:;!?\"'")
