"""Image augmentation (paper Sec. 3.3): "What is a possible image with the text in a tweet?"

A training sample with no image (or whose image got no caption) gains an imagined caption, so the
knowledge view also learns from text-only tweets. With augment.image.second_view, samples that do
have a caption may also get an imagined one as a second view. The new sample is a copy of the
origin with `caption` set and `image_id` cleared: the caption describes no real image, and a later
join by image id must not overwrite it.
"""
from __future__ import annotations

import random
import re

from ..config import ImageAug
from ..records import Sample
from .common import Context, Outcome, derived, draw, first_answer_line, record_answer

PROMPT = "aug_image"
MAX_CAPTION_WORDS = 60


def caption_of(sample: Sample, captions: dict[str, str]) -> str | None:
    """The sample's real caption: captions.jsonl by image id first, else the record's own."""
    cap = captions.get(sample.image_id) if sample.image_id else None
    return cap or sample.caption or None


def plan(train: list[Sample], captions: dict[str, str], n: int, second_view: bool, rng: random.Random) -> list[Sample]:
    eligible = [s for s in train if second_view or not caption_of(s, captions)]
    return draw(eligible, n, rng)


def parse_caption(answer: str, sample: Sample, real: str | None) -> tuple[str, str]:
    """(caption, "") or ("", reason)."""
    cap = first_answer_line(answer)
    if not cap:
        return "", "empty"
    if len(cap.split()) > MAX_CAPTION_WORDS:
        return "", "too_long"
    words = lambda t: " ".join(re.findall(r"\w+", t.lower()))  # noqa: E731
    if words(sample.text) and words(sample.text) in words(cap):
        return "", "echo_of_text"  # the tweet repeated is no image description
    if real and cap.lower() == real.lower():
        return "", "same_as_real_caption"
    return cap, ""


def augment(train: list[Sample], captions: dict[str, str], ctx: Context, cfg: ImageAug,
            rng: random.Random) -> list[Outcome]:
    chosen = plan(train, captions, cfg.n, cfg.second_view, rng)
    reqs = [ctx.request(PROMPT, f"{s.id}:aug_image", text=s.text) for s in chosen]  # llm.max_tokens
    outcomes = []
    for s, req, resp in zip(chosen, reqs, ctx.ask(reqs)):
        out = Outcome(origin=s.id, aug="image")
        raw = record_answer(out, "caption", req, resp)
        real = caption_of(s, captions)
        cap, out.reason = parse_caption(raw, s, real)
        if cap:
            out.sample = derived(s, "image", caption=cap, image_id=None, meta={
                "prompt_version": req.prompt_version, "key": req.key, "answer": raw,
                "view": "second" if real else "imagined", "origin_image_id": s.image_id})
        outcomes.append(out)
    return outcomes
