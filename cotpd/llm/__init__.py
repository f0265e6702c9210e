"""The LLM layer: a ledger-backed runner over a local SmolLM2 or any OpenAI-compatible endpoint.

    runner = build_runner(dp.llm, layout.ledger_for("knowledge"), mode="record")
    answers = runner.run([make_request(dp.llm, msgs, "cot_noun:3f2a", "train-1")], "knowledge")
    runner.stats("knowledge")  # calls, cache_hits, prompt_tokens, completion_tokens, cost_usd, errors
"""
from __future__ import annotations

from pathlib import Path

from ..config import LLMCfg
from ..params import validate
from .base import ChatRequest, ChatResponse, Runner
from .ledger import Ledger
from .runner import MODES, LLMRunner, as_llm_cfg, describe_request, make_request

__all__ = ["MODES", "ChatRequest", "ChatResponse", "LLMRunner", "Ledger", "Runner", "as_llm_cfg",
           "build_backend", "build_runner", "describe_request", "make_request"]


def build_backend(llm: LLMCfg, ledger_path: str | Path | None = None):
    """The backend named by `llm.backend` (constructing it may load a model or read the API key)."""
    if llm.backend == "local":
        from .local import LocalBackend  # lazy: torch + transformers (seconds), only on a ledger miss

        return LocalBackend(llm)
    if llm.batch_api:
        from .batch import BatchBackend  # lazy: the openai package (~1.5 s), only on a ledger miss

        return BatchBackend(llm, state_path=f"{ledger_path}.batches.json" if ledger_path else None)
    from .client import OpenAIBackend  # lazy: the openai package (~1.5 s), only on a ledger miss

    return OpenAIBackend(llm)


def build_runner(llm: LLMCfg | dict, ledger_path: str | Path, **overrides) -> LLMRunner:
    """A runner from the `llm` params section; keyword overrides (e.g. mode="record") win over it.

    The backend is only built when a request misses the ledger (never in replay mode).
    """
    llm = as_llm_cfg(llm)
    if overrides:  # validated like params.yaml: a typo or a wrong type stops here
        llm = validate(LLMCfg, {**llm.model_dump(), **overrides}, "build_runner overrides")
    paid = llm.backend == "openai"  # the local model costs nothing per token
    factor = 0.5 if paid and llm.batch_api else 1.0  # the Batch API is half price
    return LLMRunner(Ledger(ledger_path), lambda: build_backend(llm, ledger_path), mode=llm.mode,
                     price_per_1m_input=llm.price_per_1m_input if paid else 0.0,
                     price_per_1m_output=llm.price_per_1m_output if paid else 0.0,
                     price_factor=factor, progress=llm.progress)
