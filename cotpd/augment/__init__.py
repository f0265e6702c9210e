"""LLM data augmentation with checks (paper Sec. 3.3): style rewrites, entity swaps with a fact check,
imagined images for text-only tweets.

`augment_train` runs the enabled types (params augment.<type>.n > 0) over the training split only
and returns the new samples plus every rejection with its reason. Each new sample's meta holds
{"origin", "origin_split", "aug", "prompt_version", "key", ...} so the train stage can switch each
type on or off (ablation) and every sample can be traced back to the LLM answer that made it.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ..config import AugmentCfg
from ..records import ReSample, Sample
from . import entity, image, style
from .common import AUG_TYPES, Context, Outcome, draw, dup_key, rng_for, strict_yes
from .labels import is_valid_iob2

__all__ = ["AUG_TYPES", "AugmentResult", "Context", "augment_train", "strict_yes"]


@dataclass
class AugmentResult:
    samples: list[Sample] = field(default_factory=list)
    rejections: list[dict] = field(default_factory=list)
    counts: dict = field(default_factory=dict)  # type -> {attempted, kept, rejected: {reason: n}, cache_hits}
    skipped_invalid_iob2: int = 0  # training samples never used as origins


def _dedupe(outcomes: list[Outcome], train: list[Sample]) -> None:
    """Reject text augmentations identical to an original (or to an earlier augmentation)."""
    originals = {dup_key(s) for s in train}
    seen = set(originals)
    for out in outcomes:
        if out.sample is None or out.aug == "image":  # image keeps the text on purpose
            continue
        key = dup_key(out.sample)
        if key in seen:
            out.reason = "duplicate_of_original" if key in originals else "duplicate"
            out.sample = None
        else:
            seen.add(key)


def augment_train(train: list[Sample], captions: dict[str, str], cfg: AugmentCfg, ctx: Context) -> AugmentResult:
    """Augment `train` (training samples only: nothing from valid/test may leak in).

    cfg is params' `augment` section: seed, and per type n (0 = off) plus type options.
    """
    bad = [s.id for s in train if s.split != "train"]
    if bad:
        raise ValueError(f"augment_train got non-training samples (leakage): {bad[:5]}")
    # an origin with invalid IOB2 (the real Twitter-2015 keeps some I-X after O as published) has no
    # unambiguous entity set to carry over, so it is never augmented
    pool = [s for s in train if isinstance(s, ReSample) or is_valid_iob2(s.labels)]
    outcomes: list[Outcome] = []
    for aug in AUG_TYPES:
        n = getattr(cfg, aug).n
        if n <= 0 or not pool:
            continue
        rng = rng_for(cfg.seed, aug)
        if aug == "style":
            outcomes += style.augment(draw(pool, n, rng), ctx)
        elif aug == "entity":
            outcomes += entity.augment(pool, ctx, cfg.entity, rng)
        else:
            outcomes += image.augment(pool, captions, ctx, cfg.image, rng)
    _dedupe(outcomes, train)
    result = AugmentResult(skipped_invalid_iob2=len(train) - len(pool))
    for aug in AUG_TYPES:
        mine = [o for o in outcomes if o.aug == aug]
        result.counts[aug] = {
            "attempted": len(mine),
            "kept": sum(o.sample is not None for o in mine),
            "rejected": dict(sorted(Counter(o.reason for o in mine if o.sample is None).items())),
            "llm_answers": sum(len(o.answers) for o in mine),
            "cache_hits": sum(sum(o.cached.values()) for o in mine),
        }
    result.samples = [o.sample for o in outcomes if o.sample is not None]
    result.rejections = [o.rejection() for o in outcomes if o.sample is None]
    return result
