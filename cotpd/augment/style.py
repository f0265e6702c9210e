"""Style augmentation (paper Sec. 3.3): "Transform the sentence in Twitter style without changing
the meaning." The rewrite must keep every gold entity verbatim; labels (NER) or head/tail spans
(RE) are re-derived by finding those token sequences in the new tokens, never asked of the LLM.
"""
from __future__ import annotations

from dataclasses import replace

from ..records import ReSample, Sample
from .common import Context, Outcome, derived, first_answer_line, record_answer
from .labels import labels_from_spans, locate, spans_from_iob2, tokenize

PROMPT = "aug_style"


def gold_entities(sample: Sample) -> list[tuple[list[str], str]]:
    """(token sequence, tag) of what must survive: typed entities (NER) or head/tail (RE)."""
    if isinstance(sample, ReSample):
        return [(sample.tokens[sample.head.start:sample.head.end], "head"),
                (sample.tokens[sample.tail.start:sample.tail.end], "tail")]
    return [(sample.tokens[s:e], t) for s, e, t in spans_from_iob2(sample.labels)]


def relabel(origin: Sample, text: str) -> tuple[dict | None, str, str]:
    """The new tokens and labels/spans for `text`, or (None, reason, detail) when it breaks an entity."""
    entities = gold_entities(origin)
    protected = {tok for seq, _ in entities for tok in seq}
    tokens = tokenize(text, protected)
    if not tokens:
        return None, "empty", ""
    if tokens == list(origin.tokens):
        return None, "unchanged", ""
    # an answer far longer than a tweet rewrite is an essay; one under half as long lost the meaning
    if len(tokens) > 3 * len(origin.tokens) + 10:
        return None, "too_long", f"{len(tokens)} tokens for {len(origin.tokens)}"
    if 2 * len(tokens) < len(origin.tokens):
        return None, "too_short", f"{len(tokens)} tokens for {len(origin.tokens)}"
    spans, reason, detail = locate(tokens, entities, original=origin.tokens)
    if spans is None:
        return None, reason, detail
    new_name = new_proper_noun(tokens, origin.tokens)
    if new_name:
        return None, "new_proper_noun", new_name
    if isinstance(origin, ReSample):
        where = {tag: (s, e) for s, e, tag in spans}
        head = replace(origin.head, start=where["head"][0], end=where["head"][1])
        tail = replace(origin.tail, start=where["tail"][0], end=where["tail"][1])
        return {"tokens": tokens, "head": head, "tail": tail}, "", ""
    return {"tokens": tokens, "labels": labels_from_spans(len(tokens), spans)}, "", ""


def new_proper_noun(tokens: list[str], original: list[str]) -> str:
    """A capitalised word the original lacks, not at a sentence start: likely a new, unlabelled entity
    ("Cairo" -> "Cairo , Egypt"), which would be trained as O. Returns it, or ""."""
    known = set(original)
    for i, tok in enumerate(tokens):
        starts_sentence = i == 0 or tokens[i - 1] in {".", "!", "?", "!!", "...", ":", "\""}
        if tok[:1].isupper() and tok not in known and not starts_sentence:
            return tok
    return ""


def keep_list(sample: Sample) -> str:
    names = [" ".join(seq) for seq, _ in gold_entities(sample)]
    return ", ".join(dict.fromkeys(names)) or "none"


def augment(samples: list[Sample], ctx: Context) -> list[Outcome]:
    """Rewrite each sample (augment.style.n of them, drawn by the caller); answers use llm.max_tokens."""
    requests = [ctx.request(PROMPT, f"{s.id}:aug_style", text=s.text, entities=keep_list(s)) for s in samples]
    outcomes = []
    for s, req, resp in zip(samples, requests, ctx.ask(requests)):
        out = Outcome(origin=s.id, aug="style")
        raw = record_answer(out, "rewrite", req, resp)
        fields, out.reason, out.detail = relabel(s, first_answer_line(raw))
        if fields is not None:
            out.sample = derived(s, "style", meta={"prompt_version": req.prompt_version, "key": req.key,
                                                   "answer": raw}, **fields)
        outcomes.append(out)
    return outcomes

