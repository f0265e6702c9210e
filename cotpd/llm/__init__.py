"""The LLM layer: a ledger-backed runner over a local SmolLM2 or any OpenAI-compatible endpoint.

    runner = build_runner(dparams, layout.ledger, mode="record")
    answers = runner.run([make_request(dparams["llm"], msgs, "cot_noun:3f2a", "train-1")], "knowledge")
    runner.stats("knowledge")  # calls, cache_hits, prompt_tokens, completion_tokens, cost_usd, errors
"""
from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from .base import ChatRequest, ChatResponse, Runner
from .ledger import Ledger
from .runner import MODES, LLMRunner, describe_request, make_request

BACKENDS = ("local", "openai")

__all__ = ["BACKENDS", "MODES", "ChatRequest", "ChatResponse", "LLMRunner", "Ledger", "Runner",
           "build_backend", "build_runner", "describe_request", "make_request"]


def build_backend(cfg: dict, ledger_path: str | Path | None = None):
    """The backend named by `llm.backend` (constructing it may load a model or read the API key)."""
    backend = cfg.get("backend", "local")
    if backend == "local":
        from .local import LocalBackend

        return LocalBackend(batch_size=int(cfg.get("local_batch_size", 8)),
                            num_threads=cfg.get("local_num_threads"))
    opts = dict(base_url=cfg.get("base_url"), concurrency=int(cfg.get("concurrency", 16)),
                rpm=float(cfg.get("requests_per_minute", 3000)),
                tpm=float(cfg.get("tokens_per_minute", 1_000_000)),
                max_retries=int(cfg.get("max_retries", 6)), timeout_s=float(cfg.get("timeout_s", 60)))
    if "backoff_base_s" in cfg:
        opts["backoff_base_s"] = float(cfg["backoff_base_s"])
    if cfg.get("batch_api"):
        from .batch import BatchBackend

        return BatchBackend(poll_s=float(cfg.get("batch_poll_s", 30)),
                            max_wait_s=float(cfg.get("batch_max_wait_s", 86400)),
                            state_path=f"{ledger_path}.batches.json" if ledger_path else None, **opts)
    from .client import OpenAIBackend

    return OpenAIBackend(**opts)


def build_runner(dparams: dict, ledger_path: str | Path, **overrides) -> LLMRunner:
    """A runner from the `llm` section of (dataset) params; keyword overrides win over params.

    Keys read: backend (local|openai), mode (replay|record|refresh), base_url, model, concurrency,
    requests_per_minute (alias rpm), tokens_per_minute (alias tpm), max_retries, timeout_s,
    batch_api, batch_poll_s, price_per_1m_input/output, local_batch_size, progress.
    The backend is only built when a request misses the ledger (never in replay mode).
    """
    cfg = dict(dparams.get("llm") or {})
    aliases = {"rpm": "requests_per_minute", "tpm": "tokens_per_minute"}
    cfg.update({aliases.get(k, k): v for k, v in overrides.items()})
    if cfg.get("backend", "local") not in BACKENDS:
        raise ConfigError(f"llm.backend must be one of {BACKENDS}, got {cfg.get('backend')!r}")
    paid = cfg.get("backend") == "openai"  # the local model costs nothing per token
    factor = 0.5 if paid and cfg.get("batch_api") else 1.0  # the Batch API is half price
    return LLMRunner(Ledger(ledger_path), lambda: build_backend(cfg, ledger_path), mode=cfg.get("mode", "replay"),
                     price_per_1m_input=float(cfg.get("price_per_1m_input") or 0.0) if paid else 0.0,
                     price_per_1m_output=float(cfg.get("price_per_1m_output") or 0.0) if paid else 0.0,
                     price_factor=factor, progress=bool(cfg.get("progress", True)))
