"""`cotpd plan`: what recording the LLM stages would send, cost and take -- sending nothing, loading
no model.

    cotpd plan [--dataset D ...] [--set KEY=VALUE ...] [--json]

Per dataset and LLM stage (captions with a vision LLM, knowledge, augment) the requests are built by
the stages' own request builders (cotpd.captions.vision, cotpd.knowledge.cot.build_requests,
cotpd.augment), so their keys are the keys the run would look up in ledger/<ds>/<stage>.jsonl: the
plan counts those the ledger answers and estimates the rest (cotpd.plan_estimate). Augmentation asks
in steps (an entity proposal, then its fact check): an unanswered step gets a placeholder answer
(PLACEHOLDER, one word) so that the step after it is counted too.

Inputs: the prepared samples (outputs/<ds>/raw/) when `prepare` has run, else the dataset files read
through cotpd.readers (the records `prepare` would write). Captions: outputs/<ds>/captions.jsonl
when the captions stage has run, else what it would write with the precomputed caption file, else
(BLIP-2 or vision LLM captions not made yet) a placeholder of the caption budget's length.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from . import readers
from .args import common, params_of, root_of, setup_logging
from .augment import Context, augment_train
from .captions.captioners import (
    OK,
    PrecomputedCaptioner,
    VisionLLMCaptioner,
    find_image,
)
from .captions.table import read_caption_table
from .config import DatasetParams
from .errors import CotpdError
from .knowledge.cot import build_requests
from .ledgers import table
from .llm import ChatRequest, ChatResponse, Ledger
from .params import Layout
from .plan_estimate import StageEstimate, estimate, make_counter
from .records import SPLITS, Sample, read_records

PLACEHOLDER = "Placeholder"  # the stand-in answer for a request the ledger lacks


@dataclass
class StagePlan:
    dataset: str
    stage: str
    requests: list[ChatRequest] = field(default_factory=list)
    ledger: Ledger | None = None
    note: str = ""  # why a stage sends nothing, or what the numbers assume
    estimate: StageEstimate | None = None


class PlanRunner:
    """A Runner that sends nothing: ledger answers where there are some, PLACEHOLDER elsewhere; it
    keeps every distinct request it was given."""

    def __init__(self, ledger: Ledger):
        self.ledger = ledger
        self.requests: dict[str, ChatRequest] = {}

    def run(self, requests: list[ChatRequest], stage: str) -> list[ChatResponse]:
        out = []
        for r in requests:
            self.requests.setdefault(r.key, r)
            out.append(self.ledger.get(r.key) or ChatResponse(key=r.key, text=PLACEHOLDER))
        return out

    def stats(self, stage: str | None = None) -> dict:
        return {}


def read_samples(dp: DatasetParams, root: Path, layout: Layout) -> tuple[dict[str, list[Sample]], str]:
    """split -> samples, and where they came from."""
    if all(layout.raw(s).exists() for s in SPLITS):
        return {s: read_records(layout.raw(s)) for s in SPLITS}, f"{layout.raw_dir}"
    data = readers.read_dataset(dp, root, SPLITS)
    return {s: samples for s, (samples, _) in data.items()}, "dataset files (prepare has not run)"


def caption_table(dp: DatasetParams, root: Path, layout: Layout, samples: list[Sample]) -> tuple[dict, str]:
    """image id -> caption as the knowledge and augment stages will read it, and where it came from."""
    if layout.captions.exists():
        return read_caption_table(layout), str(layout.captions)
    ids = sorted({s.image_id for s in samples if s.image_id})
    kind = dp.captions.captioner
    if kind == "precomputed" and dp.dataset.captions is not None:
        results = PrecomputedCaptioner.from_params(dp, root).caption(ids)
        return ({i: r.caption for i, r in results.items() if r.status == OK},
                "the dataset's caption file (the captions stage has not run)")
    budget = dp.captions.vision_llm.max_tokens if kind == "vision_llm" else dp.captions.blip2.max_new_tokens
    return ({i: " ".join(["word"] * budget) for i in ids},
            f"placeholders of {budget} tokens ({kind} captions not made yet)")


def plan_captions(dp: DatasetParams, root: Path, layout: Layout, samples: list[Sample]) -> StagePlan:
    sp = StagePlan(dp.name, "captions", ledger=Ledger(layout.ledger_for("captions")))
    if dp.captions.captioner != "vision_llm":
        sp.note = f"captions.captioner={dp.captions.captioner}: no LLM requests"
        return sp
    images_dir = layout.resolve_input(dp, dp.dataset.images)
    if images_dir is None:
        sp.note = "captions.captioner=vision_llm but the dataset has images: null (the stage would stop)"
        return sp
    captioner = VisionLLMCaptioner(None, dp.llm, dp.captions.vision_llm, images_dir, dataset=dp.name)
    missing = 0
    for i in sorted({s.image_id for s in samples if s.image_id}):
        path = find_image(images_dir, i)
        req = captioner.request(i, path) if path else None
        missing += req is None
        if req is not None:
            sp.requests.append(req)
    sp.note = f"{missing} images missing or unreadable" if missing else ""
    return sp


def plan_knowledge(dp: DatasetParams, layout: Layout, samples: dict[str, list[Sample]], captions: dict) -> StagePlan:
    sp = StagePlan(dp.name, "knowledge", ledger=Ledger(layout.ledger_for("knowledge")))
    cot = dp.cot
    if cot.source not in ("llm", "both") or not cot.grains:
        sp.note = f"cot.source={cot.source}: no LLM requests"
        return sp
    chosen = [s for split in cot.splits for s in samples[split][:cot.max_samples]]
    # per sample, as cotpd.knowledge.cot.sample_captions: the captions table first, else its own
    per_sample = {s.id: cap for s in chosen if (cap := (captions.get(s.image_id) if s.image_id else None) or s.caption)}
    _, sp.requests, skipped = build_requests(dp.name, chosen, cot.grains, dp.llm, per_sample, max_tokens=cot.max_tokens)
    sp.note = f"{skipped} multimodal asks skipped (no caption)" if skipped else ""
    return sp


def plan_augment(dp: DatasetParams, layout: Layout, samples: dict[str, list[Sample]], captions: dict) -> StagePlan:
    sp = StagePlan(dp.name, "augment", ledger=Ledger(layout.ledger_for("augment")))
    aug = dp.augment
    if not any(getattr(aug, t).n > 0 for t in ("style", "entity", "image")):
        sp.note = "augment n: 0 for every type: no LLM requests"
        return sp
    runner = PlanRunner(sp.ledger)
    augment_train(samples["train"], captions, aug, Context(llm=runner, llm_cfg=dp.llm, dataset=dp.name))
    sp.requests = list(runner.requests.values())
    if aug.entity.n > 0 and aug.entity.source == "llm":
        sp.note = "fact checks after unanswered entity proposals counted with a placeholder name"
    return sp


def plan_dataset(dp: DatasetParams, root: Path, counter) -> tuple[list[StagePlan], dict]:
    layout = Layout(root, dp.name)
    samples, sample_source = read_samples(dp, root, layout)
    everything = [s for split in SPLITS for s in samples[split]]
    stages = [plan_captions(dp, root, layout, everything)]
    captions, caption_source = {}, "-"
    if (dp.cot.source in ("llm", "both") and "multimodal" in dp.cot.grains) or dp.augment.image.n > 0:
        captions, caption_source = caption_table(dp, root, layout, everything)
    stages += [plan_knowledge(dp, layout, samples, captions), plan_augment(dp, layout, samples, captions)]
    for sp in stages:
        if sp.requests:
            sp.estimate = estimate(sp.requests, sp.ledger, dp.llm, counter)
    return stages, {"samples": sample_source, "captions": caption_source}


def as_json(dp: DatasetParams, sp: StagePlan) -> dict:
    out = {"dataset": sp.dataset, "stage": sp.stage, "ledger": str(sp.ledger.path) if sp.ledger else None,
           "requests": len({r.key for r in sp.requests}), "note": sp.note}
    if sp.estimate is not None:
        out.update(sp.estimate.as_dict())
    out.update(backend=dp.llm.backend, model=dp.llm.model, batch_api=dp.llm.batch_api)
    return out


def render(rows: list[dict]) -> str:
    def cell(r, key, fmt="{:,}"):
        return fmt.format(r[key]) if r.get(key) is not None else "-"

    def money(r, key):
        return cell(r, key, "${:,.2f}" if (r.get(key) or 0) >= 10 else "${:.4f}")
    lines = [table(
        ["dataset", "stage", "requests", "in ledger", "to send", "input tok", "output tok typ/max",
         "cost typ/max", "wall (online)", "batches"],
        [[r["dataset"], r["stage"], r["requests"], cell(r, "answered"), cell(r, "to_send"),
          cell(r, "input_tokens"),
          f"{cell(r, 'output_tokens_typical')}/{cell(r, 'output_tokens_max')}" if r.get("to_send") else "-",
          f"{money(r, 'cost_usd_typical')}/{money(r, 'cost_usd_max')}" if r.get("to_send") else "-",
          r.get("wall_online") if r.get("to_send") else "-", cell(r, "batches")] for r in rows])]
    for r in rows:
        for note in [r["note"], *r.get("notes", [])]:
            if note:
                lines.append(f"  {r['dataset']}/{r['stage']}: {note}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="cotpd plan", description=__doc__.split("\n")[0], parents=[common()])
    ap.add_argument("--dataset", action="append", help="dataset key (repeatable; default: pipeline.datasets)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args(argv)
    setup_logging(args)
    try:
        root, params = root_of(args), params_of(args)
        counter = make_counter()
        rows, inputs = [], {}
        for ds in args.dataset or params.file.pipeline.datasets:
            dp = params.dataset(ds)
            stages, inputs[ds] = plan_dataset(dp, root, counter)
            rows += [as_json(dp, sp) for sp in stages]
    except CotpdError as exc:
        print(f"cotpd: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"token_estimator": counter.name, "inputs": inputs, "stages": rows}, indent=2))
    else:
        print(render(rows))
        print(f"input tokens: {counter.name}; inputs: " + "; ".join(
            f"{ds}: samples from {v['samples']}, captions from {v['captions']}" for ds, v in inputs.items()))
    return 0
