"""Stage 'augment': LLM data augmentation of the training split, then the Great Expectations gate.

Reads outputs/<ds>/raw/train.jsonl (valid/test only for the leakage check) and captions.jsonl;
writes augmented.jsonl (ONLY the new samples: the train stage concatenates raw train and the
augmented samples of the enabled types), rejected.jsonl (every refused augmentation with its
reason and the raw LLM answers), quarantine.jsonl (rows failing validation; empty when all
pass) and the suite's Great Expectations Data Docs (data_docs/index.html, also when it fails). A
failed expectation raises CotpdError after the quarantine is written, so `dvc repro` stops before
training on bad data.
"""
from __future__ import annotations

import logging
from pathlib import Path

from ..augment import AUG_TYPES, Context, augment_train
from ..augment.validation import validate_augmented
from ..captions.table import read_caption_table
from ..config import LLMCfg
from ..errors import CotpdError, DataError
from ..io import write_jsonl
from ..llm import build_runner
from ..params import Layout, dataset_params
from ..records import read_records, write_records

log = logging.getLogger(__name__)


class _LazyRunner:
    """Builds the real runner on the first request, so a run with every type off needs no LLM."""

    def __init__(self, llm: LLMCfg, ledger: Path):
        self.llm, self.ledger, self._runner = llm, ledger, None

    def _get(self):
        if self._runner is None:
            self._runner = build_runner(self.llm, self.ledger)
        return self._runner

    def run(self, requests, stage):
        return self._get().run(requests, stage)

    def stats(self, stage=None):
        return self._runner.stats(stage) if self._runner is not None else {}


def run(dataset: str, root: Path, params: dict, llm=None, prompt_dir=None, **resources) -> dict:
    root = Path(root)
    dp = dataset_params(params, dataset)
    layout = Layout(root, dataset)
    train_path = layout.raw("train")
    if not train_path.exists():
        raise DataError(train_path, None, "file not found: run the prepare stage first")
    train = read_records(train_path)
    captions = read_caption_table(layout)
    if dp.augment.image.n > 0 and not layout.captions.exists():
        log.warning("%s missing: every training sample counts as text-only for image augmentation",
                    layout.captions)

    ledger = layout.ensure_ledger("augment")
    runner = llm if llm is not None else _LazyRunner(dp.llm, ledger)
    ctx = Context(llm=runner, llm_cfg=dp.llm, dataset=dataset, prompt_dir=prompt_dir)
    result = augment_train(train, captions, dp.augment, ctx)
    write_records(layout.augmented, result.samples)
    write_jsonl(layout.rejected, result.rejections)

    report = validate_augmented(root, dataset, params)
    llm_stats = runner.stats("augment") or {}
    summary = {
        "types": {aug: result.counts.get(aug, {"attempted": 0, "kept": 0, "rejected": {}}) for aug in AUG_TYPES},
        "kept": len(result.samples),
        "rejected": len(result.rejections),
        "origins_skipped_invalid_iob2": result.skipped_invalid_iob2,
        "calls": llm_stats.get("calls", 0),
        "cache_hits": llm_stats.get("cache_hits", 0),
        "tokens": llm_stats.get("tokens", llm_stats.get("prompt_tokens", 0) + llm_stats.get("completion_tokens", 0)),
        "cost_usd": llm_stats.get("cost_usd", 0.0),
        "validation": {"success": report.success, "failed": report.failed, "n_rows": report.n_rows,
                       "n_failed": report.n_failed},
        "paths": {"augmented": str(layout.augmented), "rejected": str(layout.rejected),
                  "quarantine": str(layout.quarantine), "data_docs": report.data_docs},
    }
    if llm_stats:
        summary["llm"] = llm_stats
    if not report.success:
        raise CotpdError(f"{layout.augmented}: {report.n_failed} of {report.n_rows} augmented rows failed "
                         f"validation ({', '.join(report.failed)}); they are listed in {layout.quarantine} "
                         f"and shown in {report.data_docs}. Training is blocked until this is fixed.")
    return summary
