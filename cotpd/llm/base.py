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
from dataclasses import dataclass, field, fields
from typing import Protocol

import orjson


class _once:
    """functools.cached_property without its lock (Python 3.11 takes an RLock on each first read,
    i.e. once per request of a 71k-request replay): the value goes into the instance's __dict__,
    which later reads find first. Two threads computing one key at once compute the same key."""

    def __init__(self, func):
        self.func, self.name = func, func.__name__
        self.__doc__ = func.__doc__

    def __get__(self, obj, cls=None):
        if obj is None:
            return self
        value = obj.__dict__[self.name] = self.func(obj)
        return value


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

    @classmethod
    def of(cls, messages: tuple, model: str, temperature: float, max_tokens: int, seed: int | None,
           prompt_version: str, sample_key: str) -> ChatRequest:
        """ChatRequest(...) with every field given, without the frozen __init__'s seven
        object.__setattr__ calls: 1.1 us instead of 3.2 (make_request; a replay builds 71k).
        test_llm_ledger checks it makes what ChatRequest(...) makes."""
        r = _new_object(cls)
        r.__dict__.update(messages=messages, model=model, temperature=temperature, max_tokens=max_tokens,
                          seed=seed, prompt_version=prompt_version, sample_key=sample_key)
        return r

    @_once
    def key(self) -> str:
        # cached: the runner and the stages each read it (a 25k-request replay hashed every request
        # twice, a third of its time: cProfile, cotpd bench-llm-scale); the request is frozen. The
        # messages are not copied as canonical() copies them: a tuple is written as a list. A dict
        # display builds it 3x faster than a loop over _FIELDS (test_llm_ledger: same fields).
        canonical = {"messages": self.messages, "model": self.model, "temperature": self.temperature,
                     "max_tokens": self.max_tokens, "seed": self.seed, "prompt_version": self.prompt_version,
                     "sample_key": self.sample_key}
        if _plain(self) and _orjson_writes_key_bytes():
            return hashlib.sha256(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)).hexdigest()
        return key_of(canonical)


_new_object = object.__new__
_FIELDS = tuple(f.name for f in fields(ChatRequest))  # dataclasses.fields() per call: 7% of a replay
# json.dumps builds an encoder per call; one built once writes the same bytes (same options)
_KEY_JSON = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"))
_INT64 = range(-2**63, 2**63)  # orjson writes ints in this range (and refuses others)
_PLAIN_NUMBERS: set = set()  # (temperature, max_tokens, seed) already found plain by _plain


def key_of(canonical: dict) -> str:
    """The ledger key of a canonical request (ChatRequest.canonical(), or one read back from a ledger)."""
    return hashlib.sha256(_KEY_JSON.encode(canonical).encode("utf-8")).hexdigest()


def _plain(r: ChatRequest) -> bool:
    """Does the request hold only what orjson writes as json.dumps does: str fields and messages of
    str -> str, ints in int64, None, and a float whose repr is orjson's (not 1e-07, nan, inf)?"""
    t, max_tokens, seed = r.temperature, r.max_tokens, r.seed
    if not (type(t) is float and type(max_tokens) is int and (seed is None or type(seed) is int)
            and type(r.model) is str and type(r.prompt_version) is str and type(r.sample_key) is str):
        return False
    numbers = (t, max_tokens, seed)  # the same few per process: checked once each (equal floats
    if numbers not in _PLAIN_NUMBERS:  # of one type are one value but for +-0.0, both plain)
        if not (orjson.dumps(t) == float.__repr__(t).encode() and max_tokens in _INT64
                and (seed is None or seed in _INT64)):
            return False
        if len(_PLAIN_NUMBERS) < 256:
            _PLAIN_NUMBERS.add(numbers)
    for m in r.messages:  # loops, not all(<generator>): this runs once per request
        if type(m) is not dict:
            return False
        for k, v in m.items():
            if type(k) is not str or type(v) is not str:
                return False
    return True


def every_code_point() -> str:
    """Every code point but the surrogates, in order. Written as UTF-32-LE bytes by slices (code
    point i is the bytes i & 255, i >> 8 & 255, i >> 16, 0): 20 ms, where an array of 1.1M ints
    took 55 ms of the first key's time in every process (a replay's)."""
    n = 0x110000
    utf32 = bytearray(4 * n)
    utf32[0::4] = bytes(range(256)) * (n // 256)
    utf32[1::4] = b"".join(bytes([m]) * 256 for m in range(256)) * (n // 65536)
    utf32[2::4] = b"".join(bytes([h]) * 65536 for h in range(n // 65536))
    return (utf32[:4 * 0xD800] + utf32[4 * 0xE000:]).decode("utf-32-le")


@functools.cache
def _orjson_writes_key_bytes() -> bool:
    """Once per process (~0.04 s): does this orjson write a string of every code point (JSON escapes
    are per character), nested keys in code point order, ints and None as json.dumps does?"""
    probe = {"": every_code_point(), "a": [0, -1, 2**63 - 1, -2**63, None, 0.5, -0.0],
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
