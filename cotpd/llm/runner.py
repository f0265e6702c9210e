"""LLMRunner: answers requests through the ledger, calling a backend only for what it lacks.

Modes: `replay` never calls (a miss raises LedgerMiss naming the prompt), `record` calls on a miss,
`refresh` calls for every request (once per runner) and appends answers that supersede the old
ones (ledger.py), so later replays read the newest. A runner is not thread-safe: one per thread.
The backend (a model load, an HTTP client) is built lazily on the first call, so replay never
loads SmolLM2 nor needs an API key.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import sys
import threading
import time
from typing import Callable

from tqdm.auto import tqdm

from ..config import LLMCfg
from ..params import validate
from ..errors import ConfigError, CotpdError, LedgerMiss
from .base import ChatRequest, ChatResponse, last_user_text
from .ledger import Ledger, gc_paused

log = logging.getLogger(__name__)
MODES = ("replay", "record", "refresh")
LOG_EVERY_S = 30.0  # how often a log (not a terminal) hears about LLM requests in flight
STAT_KEYS = ("calls", "cache_hits", "prompt_tokens", "completion_tokens", "cost_usd", "errors", "retries")


def describe_request(req: ChatRequest) -> str:
    text = last_user_text(req.messages)[:200].replace("\n", " ")
    return f"sample_key={req.sample_key!r} prompt_version={req.prompt_version!r} prompt={text!r}"


class LLMRunner:
    def __init__(self, ledger: Ledger, backend_factory: Callable[[], object], mode: str = "replay",
                 price_per_1m_input: float = 0.0, price_per_1m_output: float = 0.0,
                 price_factor: float = 1.0, progress: bool = True):
        if mode not in MODES:
            raise ConfigError(f"llm.mode must be one of {MODES}, got {mode!r}")
        self.ledger = ledger
        self.mode = mode
        self._factory = backend_factory
        self._backend = None
        self.prices = (float(price_per_1m_input), float(price_per_1m_output), float(price_factor))
        self.progress = progress
        self._stats: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self._refreshed: set[str] = set()  # refresh re-asks each request once per runner, not per run()

    def __repr__(self) -> str:
        return f"LLMRunner(mode={self.mode!r}, ledger={str(self.ledger.path)!r}, entries={len(self.ledger)})"

    @property
    def backend(self):
        if self._backend is None:
            self._backend = self._factory()
        return self._backend

    # -- the Runner protocol ----------------------------------------------------------------------
    def run(self, requests: list[ChatRequest], stage: str) -> list[ChatResponse]:
        st = self._stats[stage]
        with gc_paused():  # one key and one response per request: see ledger.gc_paused
            keys = [r.key for r in requests]  # hashing is the hot path of a 20k replay: once each
            unique: dict[str, ChatRequest] = {}
            for k, r in zip(keys, requests):
                unique.setdefault(k, r)
            st["cache_hits"] += len(requests) - len(unique)  # in-call duplicates are answered once
            answers: dict[str, ChatResponse] = {}
            todo: list[ChatRequest] = []
            get, refresh, refreshed, hits = self.ledger.get, self.mode == "refresh", self._refreshed, 0
            for key, r in unique.items():
                hit = None if refresh and key not in refreshed else get(key)
                if hit is not None:
                    answers[key] = hit
                    hits += 1
                else:
                    todo.append(r)
            st["cache_hits"] += hits
        if todo and self.mode == "replay":
            raise LedgerMiss(
                f"{len(todo)} of {len(unique)} requests of stage {stage!r} are not in the ledger "
                f"{self.ledger.path} (llm.mode=replay); first: {describe_request(todo[0])}. "
                "Run with --set llm.mode=record to ask the LLM.")
        if todo:
            self._call(todo, stage, answers)  # the collector runs as usual while the LLM answers
        if len(unique) == len(keys):  # no duplicates (the usual case): one answer each
            return [answers[k] for k in keys]
        # duplicates get their own copy so a caller mutating one answer does not change another
        seen: set = set()
        out = []
        for k in keys:
            resp = answers[k]
            out.append(resp if k not in seen else dataclasses.replace(resp, extra=dict(resp.extra)))
            seen.add(k)
        return out

    def _call(self, todo: list[ChatRequest], stage: str, answers: dict) -> None:
        st = self._stats[stage]
        backend = self.backend
        failures: list[tuple[ChatRequest, BaseException]] = []
        bar = _progress(len(todo), f"llm {stage}", self.progress)
        t0 = time.monotonic()

        def on_result(req: ChatRequest, resp: ChatResponse) -> None:
            self.ledger.append(req, resp, stage, backend=backend.describe(), refresh=self.mode == "refresh")
            answers[req.key] = resp
            self._refreshed.add(req.key)
            st["calls"] += 1
            st["prompt_tokens"] += resp.prompt_tokens
            st["completion_tokens"] += resp.completion_tokens
            bar.update(1)

        def on_error(req: ChatRequest, exc: BaseException) -> None:
            failures.append((req, exc))
            st["errors"] += 1
            bar.update(1)

        def on_retry(req: ChatRequest, err: str) -> None:
            st["retries"] += 1

        try:
            backend.complete(todo, on_result, on_error, on_retry)
        finally:
            self.ledger.flush()
            bar.close()
            log.info("llm %s: %d calls in %.1fs via %s", stage, len(todo), time.monotonic() - t0,
                     backend.describe())
        if failures:
            lines = "\n".join(f"  {describe_request(r)}: {e}" for r, e in failures[:5])
            raise CotpdError(f"{len(failures)} of {len(todo)} LLM requests of stage {stage!r} failed "
                             f"(the {len(todo) - len(failures)} answers received are in the ledger; "
                             f"rerun to retry the rest):\n{lines}")

    def stats(self, stage: str | None = None) -> dict:
        """calls, cache_hits, prompt/completion tokens, cost_usd, errors, retries (one stage or all)."""
        stages = [stage] if stage is not None else list(self._stats)
        total = collections.Counter()
        for s in stages:
            total.update(self._stats.get(s, {}))
        out = {k: int(total.get(k, 0)) for k in STAT_KEYS}
        pin, pout, factor = self.prices
        out["cost_usd"] = round((out["prompt_tokens"] * pin + out["completion_tokens"] * pout) / 1e6 * factor, 6)
        return out

    def close(self) -> None:
        self.ledger.close()
        close = getattr(self._backend, "close", None)
        if close:
            close()


class _NoBar:
    def update(self, n): pass
    def close(self): pass


class _LogProgress:
    """Progress where stderr is a log file or CI: a line every `every_s` seconds, never one per
    request (backends call `update` from their worker threads)."""

    def __init__(self, total: int, desc: str, every_s: float = LOG_EVERY_S, clock: Callable[[], float] = time.monotonic):
        self.total, self.desc, self.every_s, self.clock = total, desc, every_s, clock
        self.n, self.t0 = 0, clock()
        self.last = self.t0
        self._lock = threading.Lock()

    def update(self, n: int) -> None:
        with self._lock:
            self.n += n
            now = self.clock()
            if now - self.last < self.every_s or self.n >= self.total:  # the end has its own line
                return
            self.last, rate = now, self.n / max(now - self.t0, 1e-9)
            log.info("%s: %d/%d requests (%.0f%%), %.1f req/s, about %.0f s left", self.desc, self.n, self.total,
                     100 * self.n / self.total, rate, (self.total - self.n) / rate)

    def close(self) -> None:
        pass


def _progress(total: int, desc: str, enabled: bool):
    """A tqdm bar in a terminal; elsewhere (a log, CI) a line now and then, not bar frames."""
    if not enabled:
        return _NoBar()
    if sys.stderr.isatty():
        return tqdm(total=total, desc=desc, unit="req", leave=False, mininterval=0.5)
    return _LogProgress(total, desc)


def as_llm_cfg(llm: LLMCfg | dict) -> LLMCfg:
    """The typed `llm` section; a plain mapping (a test's, the bench's) is validated here."""
    return llm if isinstance(llm, LLMCfg) else validate(LLMCfg, llm, "llm")


def make_request(llm: LLMCfg | dict, messages: list | tuple, prompt_version: str = "", sample_key: str = "",
                 max_tokens: int | None = None, model: str | None = None, copy: bool = True) -> ChatRequest:
    """The one way a stage builds a ChatRequest: model, temperature, max_tokens and seed from the
    `llm` section. `max_tokens` (a stage's own answer budget; None or 0: llm.max_tokens) and
    `model` (e.g. a vision model for captions) override it. Every field is part of the ledger key.
    The messages are copied (the key is computed once: a caller's later edit must not change the
    request) unless `copy=False`: for dicts made for this request alone and not kept by the caller
    (Prompt.messages), whose copy would be waste in a 71k-request replay."""
    llm = as_llm_cfg(llm)
    return ChatRequest.of(tuple(dict(m) for m in messages) if copy else tuple(messages), model or llm.model,
                          llm.temperature, max_tokens or llm.max_tokens, llm.seed, prompt_version, sample_key)
