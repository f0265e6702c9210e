"""Entity augmentation (paper Sec. 3.3): swap one entity for another that fits, then fact-check.

NER: the replacement has the same type and comes from the training split's own entity inventory
(augment.entity.source: inventory) or is proposed by the LLM (source: llm, prompt
aug_entity_propose). RE has no entity types, so the replacement is a name that fills the same role
(head or tail) of the same relation in another training instance; the relation stays and both spans
are recomputed. Every swapped sentence is then asked "Whether the sentence is possible in fact,
answer yes or no." and kept only on a strict yes (`common.strict_yes`).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, replace

from ..config import EntityAug
from ..records import ReSample, Sample, Span
from .common import Context, Outcome, derived, dup_key, first_answer_line, record_answer, strict_yes
from .labels import labels_from_spans, spans_from_iob2

PROPOSE, CHECK = "aug_entity_propose", "aug_entity_check"
MAX_NAME_TOKENS = 6  # a proposed "entity" longer than this is an explanation, not a name
# the proposal prompt names the type in words: a small model knows "person", not "PER"
TYPE_WORDS = {"PER": "person", "LOC": "location", "ORG": "organization",
              "OTHER": "other named entity (event, product, work, ...)", "MISC": "other named entity"}


@dataclass
class Swap:
    """Replace tokens[start:end] (tag = type or role) with `new`; `donor` is where `new` came from."""

    sample: Sample
    start: int
    end: int
    tag: str
    new: tuple[str, ...] = ()
    new_name: str = ""
    donor: str | None = None


def _norm(seq) -> str:
    return " ".join(seq).lower()


def inventory(train: list[Sample]) -> dict[tuple, list[tuple[tuple[str, ...], str, str]]]:
    """Key -> sorted unique (tokens, name, donor id): key is (type,) for NER, (relation, role) for RE."""
    inv: dict[tuple, dict[str, tuple]] = {}
    for s in train:
        if isinstance(s, ReSample):
            for role, span in (("head", s.head), ("tail", s.tail)):
                toks = tuple(s.tokens[span.start:span.end])
                inv.setdefault((s.relation, role), {}).setdefault(_norm(toks), (toks, span.name, s.id))
        else:
            for a, b, t in spans_from_iob2(s.labels):
                toks = tuple(s.tokens[a:b])
                inv.setdefault((t,), {}).setdefault(_norm(toks), (toks, " ".join(toks), s.id))
    return {k: [v[n] for n in sorted(v)] for k, v in inv.items()}


def _slots(s: Sample) -> list[tuple[int, int, str, tuple]]:
    """(start, end, tag, inventory key) of each replaceable mention."""
    if isinstance(s, ReSample):
        return [(s.head.start, s.head.end, "head", (s.relation, "head")),
                (s.tail.start, s.tail.end, "tail", (s.relation, "tail"))]
    return [(a, b, t, (t,)) for a, b, t in spans_from_iob2(s.labels)]


def _candidates(s: Sample, slot, inv) -> list[tuple]:
    start, end, _, key = slot
    present = _norm(s.tokens)
    # not the same name, and not a name already in the sentence (the swap would create a duplicate)
    return [c for c in inv.get(key, []) if c[2] != s.id and _norm(c[0]) != _norm(s.tokens[start:end])
            and f" {_norm(c[0])} " not in f" {present} "]


def plan(train: list[Sample], n: int, rng: random.Random, use_inventory: bool = True) -> list[Swap]:
    """Deterministically pick up to n samples and, for each, the mention and its replacement.

    Samples are visited in a seeded random order until n swaps are found, so only visited samples
    pay for the candidate search (the inventory of a frequent relation holds thousands of names).
    """
    inv = inventory(train) if use_inventory else {}
    originals = {dup_key(s) for s in train}
    order = list(train)
    rng.shuffle(order)
    swaps: list[Swap] = []
    for s in order:
        if len(swaps) >= max(int(n), 0):
            break
        if isinstance(s, ReSample) and not (s.head.end <= s.tail.start or s.tail.end <= s.head.start):
            continue  # overlapping head/tail: replacing one would cut the other
        options = []
        for start, end, tag, key in _slots(s):
            if not use_inventory:
                options.append(Swap(s, start, end, tag))
                continue
            # a swap that recreates another training sentence would be a duplicate, not new data
            for toks, name, donor in _candidates(s, (start, end, tag, key), inv):
                swap = Swap(s, start, end, tag, toks, name, donor)
                if dup_key(derived(s, "entity", **apply(swap))) not in originals:
                    options.append(swap)
        if options:
            swaps.append(options[rng.randrange(len(options))])
    return swaps


def apply(swap: Swap) -> dict:
    """New tokens and labels (NER) or spans (RE) after the swap; other spans shift by the length change."""
    s, new = swap.sample, list(swap.new)
    tokens = s.tokens[:swap.start] + new + s.tokens[swap.end:]
    delta = len(new) - (swap.end - swap.start)
    if isinstance(s, ReSample):
        def moved(span: Span) -> Span:
            return replace(span, start=span.start + delta, end=span.end + delta) if span.start >= swap.end else span
        spans = {"head": moved(s.head), "tail": moved(s.tail)}
        spans[swap.tag] = replace(spans[swap.tag], start=swap.start, end=swap.start + len(new), name=swap.new_name)
        return {"tokens": tokens, **spans}
    kept = [(a if a < swap.start else a + delta, b if a < swap.start else b + delta, t)
            for a, b, t in spans_from_iob2(s.labels) if (a, b) != (swap.start, swap.end)]
    return {"tokens": tokens, "labels": labels_from_spans(len(tokens), kept + [(swap.start, swap.start + len(new), swap.tag)])}


def parse_proposal(answer: str, swap: Swap) -> tuple[tuple[str, ...], str]:
    """(tokens, "") for a usable proposed name, else ((), reason)."""
    name = first_answer_line(answer).rstrip(".!?,;:").strip()
    toks = tuple(name.split())
    if not toks:
        return (), "proposal_empty"
    if len(toks) > MAX_NAME_TOKENS:
        return (), "proposal_too_long"
    if _norm(toks) == _norm(swap.sample.tokens[swap.start:swap.end]):
        return (), "proposal_same_entity"
    if f" {_norm(toks)} " in f" {_norm(swap.sample.tokens)} ":
        return (), "proposal_already_in_sentence"
    return toks, ""


def augment(train: list[Sample], ctx: Context, cfg: EntityAug, rng: random.Random) -> list[Outcome]:
    # RE has no types to propose for, so it always draws same-role names from the inventory
    use_inv = cfg.source == "inventory" or any(isinstance(s, ReSample) for s in train)
    swaps = plan(train, cfg.n, rng, use_inventory=use_inv)
    outcomes = {id(sw): Outcome(origin=sw.sample.id, aug="entity") for sw in swaps}
    if not use_inv:
        reqs = [ctx.request(PROPOSE, f"{sw.sample.id}:aug_entity_propose", cfg.propose_max_tokens,
                            text=sw.sample.text, entity=" ".join(sw.sample.tokens[sw.start:sw.end]), type=TYPE_WORDS.get(sw.tag, sw.tag))
                for sw in swaps]
        for sw, req, resp in zip(swaps, reqs, ctx.ask(reqs)):
            out = outcomes[id(sw)]
            sw.new, out.reason = parse_proposal(record_answer(out, "propose", req, resp), sw)
            sw.new_name = " ".join(sw.new)
            out.detail = first_answer_line(resp.text)[:200] if out.reason else ""
    live = [sw for sw in swaps if not outcomes[id(sw)].reason]
    fields = {id(sw): apply(sw) for sw in live}
    reqs = [ctx.request(CHECK, f"{sw.sample.id}:aug_entity_check:{sw.new_name}", cfg.check_max_tokens,
                        text=" ".join(fields[id(sw)]["tokens"])) for sw in live]
    for sw, req, resp in zip(live, reqs, ctx.ask(reqs)):
        out = outcomes[id(sw)]
        answer = record_answer(out, "check", req, resp)
        if not strict_yes(answer):
            out.reason, out.detail = "fact_check_not_yes", answer.strip()[:200]
            continue
        old = " ".join(sw.sample.tokens[sw.start:sw.end])
        out.sample = derived(sw.sample, "entity", meta={
            "replaced": {"tag": sw.tag, "old": old, "new": sw.new_name, "start": sw.start,
                         "source": "inventory" if use_inv else "llm", "donor": sw.donor,
                         "propose_key": out.keys.get("propose"), "propose_answer": out.answers.get("propose")},
            "fact_check": {"verdict": "yes", "answer": answer, "key": req.key},
            "prompt_version": req.prompt_version, "key": req.key}, **fields[id(sw)])
    return [outcomes[id(sw)] for sw in swaps]

