"""Tokens and labels of rewritten text: tokenizing an LLM rewrite and finding the gold entities in it.

The LLM returns free text, but the student trains on word tokens with IOB2 labels (NER) or token
spans (RE). We never ask the LLM for labels: a rewrite is kept only when every gold entity string
is still there verbatim, as a token sequence, exactly as often as before; labels and spans are
then re-derived from where those sequences sit in the new tokens.
"""
from __future__ import annotations

import re
import string
from collections import Counter
from typing import Iterable, Sequence

from ..readers.conll import entity_spans

# punctuation split off a word's edges; '@' and '#' stay attached (Twitter handles and hashtags are
# single tokens in both benchmarks)
_EDGE_PUNCT = set(string.punctuation + "“”‘’…«»–—¡¿") - {"@", "#"}
_CLITICS = ("'s", "’s")


def _split_edges(word: str, protected: set[str]) -> list[str]:
    """Split leading/trailing punctuation off `word`, stopping as soon as the rest is protected."""
    lead: list[str] = []
    trail: list[str] = []
    core = word
    while core and core not in protected and core[0] in _EDGE_PUNCT:
        lead.append(core[0])
        core = core[1:]
    while core and core not in protected and core[-1] in _EDGE_PUNCT:
        trail.insert(0, core[-1])
        core = core[:-1]
    # "Obama's" -> "Obama", "'s" when "Obama" is an entity token (the benchmarks split the clitic)
    clitic = []
    if core not in protected:
        for c in _CLITICS:
            if core.endswith(c) and core[: -len(c)] in protected:
                core, clitic = core[: -len(c)], [c]
                break
    # runs like "..." or "!!" stay one token, as tweets write them
    return _merge_runs(lead) + ([core] if core else []) + clitic + _merge_runs(trail)


def _merge_runs(chars: list[str]) -> list[str]:
    return re.findall(r"(\.{2,}|!{2,}|\?{2,}|.)", "".join(chars)) if chars else []


def tokenize(text: str, protected: Iterable[str] = ()) -> list[str]:
    """Whitespace split, then punctuation split off word edges unless the word is `protected`.

    `protected` holds the tokens of the gold entities, so "U.S." or "@user" stay whole when they
    are (part of) an entity, while "Obama," becomes "Obama", ",".
    """
    keep = set(protected)
    out: list[str] = []
    for word in text.split():
        out.extend([word] if word in keep else _split_edges(word, keep))
    return out


def spans_from_iob2(labels: Sequence[str]) -> list[tuple[int, int, str]]:
    """(start, end, type) of each entity, with the readers' seqeval-strict semantics (one rule for
    the whole project: an I- without its B- is no entity)."""
    return [(a, b, t) for t, a, b in entity_spans(list(labels))]


def is_valid_iob2(labels: Sequence[str]) -> bool:
    """Strict IOB2: every I-X follows B-X or I-X; anything else must be O or B-X."""
    prev = "O"
    for lab in labels:
        prefix, _, t = lab.partition("-")
        if lab != "O" and (prefix not in ("B", "I") or not t):
            return False
        if prefix == "I" and prev not in (f"B-{t}", f"I-{t}"):
            return False
        prev = lab
    return True


def labels_from_spans(n: int, spans: Iterable[tuple[int, int, str]]) -> list[str]:
    labels = ["O"] * n
    for start, end, etype in spans:
        labels[start] = f"B-{etype}"
        for i in range(start + 1, end):
            labels[i] = f"I-{etype}"
    return labels


def _occurrences(tokens: Sequence[str], seq: Sequence[str]) -> list[int]:
    k = len(seq)
    return [i for i in range(len(tokens) - k + 1) if list(tokens[i:i + k]) == list(seq)]


def _diagnose_missing(tokens: Sequence[str], seq: Sequence[str]) -> str:
    """Why a gold entity is not found: split apart, case/spelling changed, or dropped."""
    if all(t in tokens for t in seq) and len(seq) > 1:
        return "entity_split"
    low = [t.lower() for t in tokens]
    if _occurrences(low, [t.lower() for t in seq]) or any(s.lower() in " ".join(low) for s in seq):
        return "entity_changed"
    return "entity_dropped"


def locate(tokens: Sequence[str], entities: Sequence[tuple[Sequence[str], str]],
           original: Sequence[str] = ()) -> tuple[list[tuple[int, int, str]] | None, str, str]:
    """Place gold entities (token sequence, tag) in `tokens`.

    Returns (spans, "", "") when every entity is found exactly as often as it is gold, with no
    overlaps; otherwise (None, reason, detail). Longer entities are placed first, so "York" inside
    "New York" is not counted as a second "York". A found entity whose neighbour is a capitalised
    word that the original sentence did not contain ("Obama" -> "Barack Obama") is rejected as
    extended, because its gold span would be cut short.
    """
    tags_of: dict[tuple[str, ...], set[str]] = {}
    need = Counter()
    for seq, tag in entities:
        key = tuple(seq)
        tags_of.setdefault(key, set()).add(tag)
        need[key] += 1
    for key, tags in tags_of.items():
        if len(tags) > 1:  # same string, two roles/types: position cannot tell which is which
            return None, "entity_ambiguous", " ".join(key)
    orig_words = set(original)
    taken = [False] * len(tokens)
    spans: list[tuple[int, int, str]] = []
    for key in sorted(need, key=len, reverse=True):
        found = [i for i in _occurrences(tokens, key) if not any(taken[i:i + len(key)])]
        name = " ".join(key)
        if len(found) < need[key]:
            return None, _diagnose_missing(tokens, key), name
        if len(found) > need[key]:
            return None, "entity_duplicated", name
        for i in found:
            end = i + len(key)
            for j in (i - 1, end):
                if 0 <= j < len(tokens) and tokens[j][:1].isupper() and tokens[j] not in orig_words:
                    return None, "entity_extended", f"{name} next to {tokens[j]}"
            taken[i:end] = [True] * len(key)
            spans.append((i, end, next(iter(tags_of[key]))))
    return sorted(spans), "", ""
