"""Stage 'knowledge': chain-of-thought knowledge from an LLM at three grains (paper Sec. 3.2).

Per sample and grain (params cot.grains: noun | sentence | multimodal) one request built from the
versioned prompt file (cotpd/prompts/cot_<grain>[_re].txt) goes through the LLM runner, whose
ledger pays for each distinct request once. cot.source picks where knowledge comes from:
llm | precomputed (the published ChatGPT knowledge files, grain "precomputed") | both | none.
Writes outputs/<ds>/knowledge.jsonl: {sample_id, split, grain, text, source, model, key}.

The multimodal grain needs a caption: a sample whose image has none (or no image at all) gets no
multimodal request -- asking "the relation between the text and the attached image" with no image
would only invite a made-up answer that the student then learns from. Such skips are counted.
"""
from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from ..errors import ConfigError
from ..io import read_jsonl, write_jsonl
from ..llm.base import ChatRequest
from ..params import Layout, dataset_params
from ..prompts import cot_prompt_name, load
from ..records import GRAINS, Sample, read_records

log = logging.getLogger(__name__)
SOURCES = ("llm", "precomputed", "both", "none")


def read_samples(layout: Layout, splits: list[str], max_samples: int | None) -> list[Sample]:
    samples = []
    for split in splits:
        recs = read_records(layout.raw(split))
        samples.extend(recs[:max_samples] if max_samples is not None else recs)
    return samples


def sample_captions(layout: Layout, samples: list[Sample]) -> dict[str, str]:
    """sample id -> caption: captions.jsonl first (the captions stage), else the record's own."""
    by_image = {}
    if layout.captions.exists():
        by_image = {r["image_id"]: r["caption"] for r in read_jsonl(layout.captions) if r.get("caption")}
    out = {}
    for s in samples:
        cap = by_image.get(s.image_id) if s.image_id else None
        cap = cap or s.caption
        if cap:
            out[s.id] = cap
    return out


def build_requests(dataset: str, samples: list[Sample], grains: list[str], llm_cfg: dict,
                   captions: dict[str, str], prompt_dir=None) -> tuple[list[tuple[Sample, str]], list[ChatRequest], int]:
    """(sample, grain) pairs and their requests, plus how many multimodal asks were skipped."""
    prompts = {}
    pairs, requests, skipped = [], [], 0
    for s in samples:
        for grain in grains:
            if grain == "multimodal" and s.id not in captions:
                skipped += 1
                continue
            name = cot_prompt_name(grain, s.task)
            prompt = prompts.get(name) or prompts.setdefault(name, load(name, prompt_dir))
            values = {"text": s.text, "caption": captions.get(s.id, "")}
            if s.task == "re":
                values.update(head=s.head.name, tail=s.tail.name)
            requests.append(ChatRequest(
                messages=prompt.messages(**values), model=llm_cfg["model"],
                temperature=float(llm_cfg.get("temperature", 0.0)), max_tokens=int(llm_cfg["max_tokens"]),
                seed=llm_cfg.get("seed"), prompt_version=prompt.version,
                sample_key=f"{dataset}:{s.id}:{grain}"))
            pairs.append((s, grain))
    return pairs, requests, skipped


def precomputed_records(dparams: dict, root: Path, samples: list[Sample]) -> list[dict]:
    """Records from the dataset's published knowledge files (PGIM ChatGPT format), grain "precomputed"."""
    from ..readers import load_precomputed_knowledge

    if not dparams["dataset"].get("knowledge"):
        raise ConfigError(f"cot.source asks for precomputed knowledge but dataset "
                          f"{dparams['dataset']['name']!r} has knowledge: null")
    wanted = {s.id: s for s in samples}
    out = []
    for split in sorted({s.split for s in samples}):
        found = load_precomputed_knowledge(dparams, root, split, [s for s in samples if s.split == split])
        for sid, text in found.items():
            if sid in wanted and text and text.strip():
                out.append({"sample_id": sid, "split": split, "grain": "precomputed", "text": text.strip(),
                            "source": "precomputed", "model": "precomputed", "key": None})
    return out


def load_knowledge(path: str | Path) -> dict[str, dict[str, str]]:
    """sample id -> {grain: text} from a knowledge.jsonl (what later stages attach to records)."""
    out: dict[str, dict[str, str]] = {}
    for r in read_jsonl(path):
        out.setdefault(r["sample_id"], {})[r["grain"]] = r["text"]
    return out


def run(dataset: str, root: Path, params: dict, llm=None, prompt_dir=None, **resources) -> dict:
    root = Path(root)
    dparams = dataset_params(params, dataset)
    layout = Layout(root, dataset)
    ledger = layout.ensure_ledger("knowledge")
    cot = dparams["cot"]
    source = cot.get("source", "llm")
    if source not in SOURCES:
        raise ConfigError(f"cot.source must be one of {SOURCES}, got {source!r}")
    grains = list(cot.get("grains") or [])
    bad = [g for g in grains if g not in GRAINS]
    if bad:
        raise ConfigError(f"cot.grains: unknown grain(s) {bad}; expected a subset of {list(GRAINS)}")
    splits = list(cot.get("splits") or [])
    samples = [] if source == "none" else read_samples(layout, splits, cot.get("max_samples"))

    records: list[dict] = []
    llm_summary: dict = {}
    skipped = 0
    if source in ("llm", "both") and grains and samples:
        captions = sample_captions(layout, samples)
        llm_cfg = dict(dparams["llm"])
        if cot.get("max_tokens"):  # CoT answers may get their own length budget
            llm_cfg["max_tokens"] = cot["max_tokens"]
        pairs, requests, skipped = build_requests(dataset, samples, grains, llm_cfg, captions, prompt_dir)
        if requests:
            own = llm is None
            if own:
                from ..llm import build_runner

                llm = build_runner(dparams, ledger)
            try:
                responses = llm.run(requests, "knowledge")
            finally:
                if own:
                    llm.close()
            if len(responses) != len(requests):
                raise RuntimeError(f"LLM runner answered {len(responses)} of {len(requests)} requests")
            for (s, grain), req, resp in zip(pairs, requests, responses):
                records.append({"sample_id": s.id, "split": s.split, "grain": grain, "text": (resp.text or "").strip(),
                                "source": "llm", "model": resp.model or req.model, "key": req.key})
            llm_summary = llm.stats("knowledge")
    if source in ("precomputed", "both") and samples:
        records.extend(precomputed_records(dparams, root, samples))

    write_jsonl(layout.knowledge, records)
    with_text = {r["sample_id"] for r in records if r["text"]}
    per_grain = Counter(r["grain"] for r in records)
    summary = {
        "source": source,
        "grains": grains,
        "samples": len(samples),
        "records": len(records),
        "records_per_grain": dict(sorted(per_grain.items())),
        "empty_answers": sum(1 for r in records if not r["text"]),
        "multimodal_skipped_no_caption": skipped,
        "samples_without_knowledge": len(samples) - len(with_text & {s.id for s in samples}),
        "calls": llm_summary.get("calls", 0),
        "cache_hits": llm_summary.get("cache_hits", 0),
        "tokens": llm_summary.get("prompt_tokens", 0) + llm_summary.get("completion_tokens", 0),
        "cost_usd": llm_summary.get("cost_usd", 0.0),
        "path": str(layout.knowledge),
    }
    if llm_summary:
        summary["llm"] = llm_summary
    return summary
