"""Chain-of-thought knowledge from an LLM at three grains (paper Sec. 3.2).

Per sample and grain (params cot.grains: noun | sentence | multimodal) one request built from the
versioned prompt file (cotpd/prompts/cot_<grain>[_re].txt) goes through the LLM runner, whose
ledger pays for each distinct request once. cot.source picks where knowledge comes from:
llm | precomputed (the published ChatGPT knowledge files, grain "precomputed") | both | none.
A record is {sample_id, split, grain, text, source, model, key}.

The multimodal grain needs a caption: a sample whose image has none (or no image at all) gets no
multimodal request -- asking "the relation between the text and the attached image" with no image
would only invite a made-up answer that the student then learns from. Such skips are counted.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..captions.table import read_caption_table
from ..config import DatasetParams, Grain, LLMCfg, Split
from ..errors import ConfigError, CotpdError
from ..io import read_jsonl
from ..llm import ChatRequest, ChatResponse, Runner, as_llm_cfg, build_runner, make_request
from ..llm.ledger import gc_paused
from ..params import Layout
from ..prompts import Prompt, cot_prompt_name, load
from ..readers import load_precomputed_knowledge
from ..records import Sample, read_records

STAGE = "knowledge"  # the runner's stats and the ledger's `stage` field


def read_samples(layout: Layout, splits: list[Split], max_samples: int | None) -> list[Sample]:
    """The prepared samples of `splits`, the first `max_samples` of each (None: all)."""
    samples = []
    with gc_paused():
        for split in splits:
            recs = read_records(layout.raw(split))
            samples.extend(recs[:max_samples] if max_samples is not None else recs)
    return samples


def sample_captions(layout: Layout, samples: list[Sample]) -> dict[str, str]:
    """sample id -> caption: captions.jsonl first (the captions stage), else the record's own."""
    with gc_paused():
        by_image = read_caption_table(layout)
    out = {}
    for s in samples:
        cap = (by_image.get(s.image_id) if s.image_id else None) or s.caption
        if cap:
            out[s.id] = cap
    return out


def build_requests(dataset: str, samples: list[Sample], grains: list[Grain], llm: LLMCfg,
                   captions: dict[str, str], prompt_dir=None, max_tokens: int | None = None,
                   ) -> tuple[list[tuple[Sample, Grain]], list[ChatRequest], int]:
    """(sample, grain) pairs and their requests, plus how many multimodal asks were skipped.
    `max_tokens`: the CoT answer budget (cot.max_tokens; None: llm.max_tokens)."""
    prompts: dict[tuple[str, Grain], Prompt] = {}  # (task, grain) -> its prompt, loaded once
    llm = as_llm_cfg(llm)  # validated once, not per request
    pairs, requests, skipped = [], [], 0
    with gc_paused():  # tens of thousands of acyclic dicts: see llm.ledger.gc_paused
        for s in samples:
            values = None  # the sample's values, made once for all its grains
            for grain in grains:
                if grain == "multimodal" and s.id not in captions:
                    skipped += 1
                    continue
                prompt = prompts.get((s.task, grain))
                if prompt is None:
                    prompt = prompts[s.task, grain] = load(cot_prompt_name(grain, s.task), prompt_dir)
                if values is None:
                    values = {"text": s.text, "caption": captions.get(s.id, "")}
                    if s.task == "re":
                        values.update(head=s.head.name, tail=s.tail.name)
                # the messages are made here for this request alone: no copy (make_request)
                requests.append(make_request(llm, prompt.messages_of(values), prompt.version,
                                             f"{dataset}:{s.id}:{grain}", max_tokens=max_tokens, copy=False))
                pairs.append((s, grain))
    return pairs, requests, skipped


def llm_records(pairs: list[tuple[Sample, Grain]], requests: list[ChatRequest],
                responses: list[ChatResponse]) -> list[dict]:
    if len(responses) != len(requests):
        raise CotpdError(f"LLM runner answered {len(responses)} of {len(requests)} requests")
    with gc_paused():
        return [{"sample_id": s.id, "split": s.split, "grain": grain, "text": (resp.text or "").strip(),
                 "source": "llm", "model": resp.model or req.model, "key": req.key}
                for (s, grain), req, resp in zip(pairs, requests, responses)]


def precomputed_records(dp: DatasetParams, root: Path, samples: list[Sample]) -> list[dict]:
    """Records from the dataset's published knowledge files (PGIM ChatGPT format), grain "precomputed"."""
    if dp.dataset.knowledge is None:
        raise ConfigError(f"cot.source asks for precomputed knowledge but dataset "
                          f"{dp.dataset.name!r} has knowledge: null")
    wanted = {s.id: s for s in samples}
    out = []
    for split in sorted({s.split for s in samples}):
        found = load_precomputed_knowledge(dp, root, split, [s for s in samples if s.split == split])
        for sid, text in found.items():
            if sid in wanted and text and text.strip():
                out.append({"sample_id": sid, "split": split, "grain": "precomputed", "text": text.strip(),
                            "source": "precomputed", "model": "precomputed", "key": None})
    return out


@dataclass
class KnowledgeResult:
    """What `generate` made: the records, and what the summary counts."""
    source: str
    grains: list[Grain]
    samples: list[Sample]
    records: list[dict] = field(default_factory=list)
    multimodal_skipped: int = 0  # multimodal asks left out for want of a caption
    llm_stats: dict = field(default_factory=dict)  # the runner's stats for this stage (none asked: {})

    def summary(self) -> dict:
        with_text = {r["sample_id"] for r in self.records if r["text"]}
        per_grain = Counter(r["grain"] for r in self.records)
        st = self.llm_stats
        out = {
            "source": self.source,
            "grains": self.grains,
            "samples": len(self.samples),
            "records": len(self.records),
            "records_per_grain": dict(sorted(per_grain.items())),
            "empty_answers": sum(1 for r in self.records if not r["text"]),
            "multimodal_skipped_no_caption": self.multimodal_skipped,
            "samples_without_knowledge": len(self.samples) - len(with_text & {s.id for s in self.samples}),
            "calls": st.get("calls", 0),
            "cache_hits": st.get("cache_hits", 0),
            "tokens": st.get("prompt_tokens", 0) + st.get("completion_tokens", 0),
            "cost_usd": st.get("cost_usd", 0.0),
        }
        if st:
            out["llm"] = st
        return out


def generate(dp: DatasetParams, root: Path, llm: Runner | None = None, prompt_dir=None) -> KnowledgeResult:
    """Knowledge for the prepared samples of one dataset, as params' `cot` section asks. `llm`: a
    runner to use instead of one built (and closed) here over the dataset's knowledge ledger."""
    layout = Layout(Path(root), dp.dataset.name)
    cot = dp.cot
    requests = []
    with gc_paused():  # one pause (and one collection after it) for reading and building, not three
        samples = [] if cot.source == "none" else read_samples(layout, cot.splits, cot.max_samples)
        result = KnowledgeResult(source=cot.source, grains=list(cot.grains), samples=samples)
        if cot.source in ("llm", "both") and cot.grains and samples:
            pairs, requests, result.multimodal_skipped = build_requests(
                dp.dataset.name, samples, cot.grains, dp.llm, sample_captions(layout, samples), prompt_dir,
                max_tokens=cot.max_tokens)
    if requests:
        runner = llm if llm is not None else build_runner(dp.llm, layout.ledger_for(STAGE))
        try:
            result.records.extend(llm_records(pairs, requests, runner.run(requests, STAGE)))
            result.llm_stats = runner.stats(STAGE)
        finally:
            if llm is None:  # a runner built here, closed here
                runner.close()
    if cot.source in ("precomputed", "both") and samples:
        result.records.extend(precomputed_records(dp, root, samples))
    return result


def load_knowledge(path: str | Path) -> dict[str, dict[str, str]]:
    """sample id -> {grain: text} from a knowledge.jsonl (what later stages attach to records)."""
    out: dict[str, dict[str, str]] = {}
    for r in read_jsonl(path):
        out.setdefault(r["sample_id"], {})[r["grain"]] = r["text"]
    return out
