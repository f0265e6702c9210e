"""The LLM contract every stage codes against: a request, a response, and a runner.

A request's `key` is what the response ledger is indexed by: the SHA-256 of the canonical request
(model, messages, decoding parameters, prompt version, sample key), so the same question asked
twice is paid for once, and a changed prompt file is a new question.
"""
from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field, fields
from typing import Protocol


@dataclass(frozen=True)
class ChatRequest:
    messages: tuple  # tuple of {"role": ..., "content": ...} dicts (content may be a list for images)
    model: str
    temperature: float = 0.0
    max_tokens: int = 64
    seed: int | None = 0
    prompt_version: str = ""  # e.g. "cot_noun:3f2a9c1b" (prompt name + hash of its file)
    sample_key: str = ""  # e.g. "train-12" (which sample this is about)

    def canonical(self) -> dict:
        # same dict as dataclasses.asdict (whose deep copies made a 20k-request replay 3x slower)
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["messages"] = [dict(m) for m in self.messages]
        return d

    @functools.cached_property
    def key(self) -> str:
        # cached: the runner and the stages each read it (a 25k-request replay hashed every request
        # twice, a third of its time: cProfile, cotpd bench-llm-scale); the request is frozen
        return key_of(self.canonical())


def key_of(canonical: dict) -> str:
    """The ledger key of a canonical request (ChatRequest.canonical(), or one read back from a ledger)."""
    blob = json.dumps(canonical, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass
class ChatResponse:
    key: str
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model: str = ""  # the model (fingerprint) that answered
    cached: bool = False  # True when replayed from the ledger
    created: float = 0.0  # unix time the response arrived
    extra: dict = field(default_factory=dict)


def last_user_text(messages) -> str:
    """The text of the last user message (the text parts of a multimodal content list)."""
    for m in reversed(messages or ()):
        if m.get("role") == "user":
            c = m.get("content")
            if isinstance(c, list):
                return " ".join(p.get("text", "") for p in c if isinstance(p, dict))
            return str(c or "")
    return ""


class Runner(Protocol):
    """What stages receive as `llm=`: answers a list of requests, in order, through the ledger."""

    def run(self, requests: list[ChatRequest], stage: str) -> list[ChatResponse]: ...

    def stats(self, stage: str | None = None) -> dict: ...  # calls, cache_hits, tokens, cost_usd
