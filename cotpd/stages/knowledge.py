"""Stage 'knowledge': chain-of-thought knowledge from an LLM at three grains (paper Sec. 3.2).

Writes outputs/<ds>/knowledge.jsonl: {sample_id, split, grain, text, source, model, key}, one row
per sample and grain (cotpd.knowledge.cot says how they are made), and creates the stage's ledger
(ledger/<ds>/knowledge.jsonl, a DVC output) even when no request is asked.
"""
from __future__ import annotations

from pathlib import Path

from ..io import write_jsonl
from ..knowledge import generate
from ..params import Layout, Params, dataset_params


def run(dataset: str, root: Path, params: Params | dict, llm=None, prompt_dir=None, **resources) -> dict:
    root = Path(root)
    dp = dataset_params(params, dataset)
    layout = Layout(root, dataset)
    layout.ensure_ledger("knowledge")
    result = generate(dp, root, llm=llm, prompt_dir=prompt_dir)
    write_jsonl(layout.knowledge, result.records)
    return {**result.summary(), "path": str(layout.knowledge)}
