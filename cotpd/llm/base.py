"""The LLM contract every stage codes against: a request, a response, and a runner.

A request's `key` is what the response ledger is indexed by: the SHA-256 of the canonical request
(model, messages, decoding parameters, prompt version, sample key), so the same question asked
twice is paid for once, and a changed prompt file is a new question.

The bytes hashed are `json.dumps(canonical, sort_keys=True, ensure_ascii=False, separators=(",", ":"))`
(`key_of`). Writing them is about half a key's cost (0.67 s of 1.4 s for MNRE's 46k knowledge requests);
orjson writes the same bytes 3x faster for the requests stages build (strings, ints, None, a float
temperature): keys 0.98 s -> 0.36 s for those 46k requests. So `ChatRequest.key` uses
it when `_orjson_writes_key_bytes` has checked, once per process, that the installed orjson escapes
every code point and orders keys as json.dumps does, and `_plain` that the request holds only
those types; anything else goes through json.dumps.
"""
from __future__ import annotations

import functools
import hashlib
import json
import sys
from array import array
from dataclasses import dataclass, field, fields
from typing import Protocol

import orjson


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
        d = {name: getattr(self, name) for name in _FIELDS}
        d["messages"] = [dict(m) for m in self.messages]
        return d

    @functools.cached_property
    def key(self) -> str:
        # cached: the runner and the stages each read it (a 25k-request replay hashed every request
        # twice, a third of its time: cProfile, cotpd bench-llm-scale); the request is frozen. The
        # messages are not copied as canonical() copies them: a tuple is written as a list.
        canonical = {name: getattr(self, name) for name in _FIELDS}
        if _plain(self) and _orjson_writes_key_bytes():
            return hashlib.sha256(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)).hexdigest()
        return key_of(canonical)


_FIELDS = tuple(f.name for f in fields(ChatRequest))  # dataclasses.fields() per call: 7% of a replay
# json.dumps builds an encoder per call; one built once writes the same bytes (same options)
_KEY_JSON = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"))
_INT64 = range(-2**63, 2**63)  # orjson writes ints in this range (and refuses others)


def key_of(canonical: dict) -> str:
    """The ledger key of a canonical request (ChatRequest.canonical(), or one read back from a ledger)."""
    return hashlib.sha256(_KEY_JSON.encode(canonical).encode("utf-8")).hexdigest()


def _plain(r: ChatRequest) -> bool:
    """Does the request hold only what orjson writes as json.dumps does: str fields and messages of
    str -> str, ints in int64, None, and a float whose repr is orjson's (not 1e-07, nan, inf)?"""
    t = r.temperature
    if not (type(t) is float and orjson.dumps(t) == float.__repr__(t).encode()):
        return False
    if type(r.max_tokens) is not int or r.max_tokens not in _INT64 or not (
            r.seed is None or (type(r.seed) is int and r.seed in _INT64)):
        return False
    if not (type(r.model) is str and type(r.prompt_version) is str and type(r.sample_key) is str):
        return False
    for m in r.messages:  # loops, not all(<generator>): this runs once per request
        if type(m) is not dict:
            return False
        for k, v in m.items():
            if type(k) is not str or type(v) is not str:
                return False
    return True


@functools.cache
def _orjson_writes_key_bytes() -> bool:
    """Once per process (~0.1 s): does this orjson write a string of every code point (JSON escapes
    are per character), nested keys in code point order, ints and None as json.dumps does?"""
    points = array("I", range(0xD800))
    points.extend(range(0xE000, 0x110000))
    every = points.tobytes().decode(f"utf-32-{'le' if sys.byteorder == 'little' else 'be'}")
    probe = {"": every, "a": [0, -1, 2**63 - 1, -2**63, None, 0.5, -0.0],
             "\u00e9": {"\uffff": 1, "\U00010000": 2, "Z": 3, "\x7f": 4, "": 5}, "\U0010ffff": "x"}
    return orjson.dumps(probe, option=orjson.OPT_SORT_KEYS) == _KEY_JSON.encode(probe).encode("utf-8")


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
