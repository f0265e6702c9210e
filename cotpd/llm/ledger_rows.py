"""Reading ledger lines (cotpd/llm/ledger.py): streamed in blocks, parsed with orjson, and what the
ledger keeps in memory per answer.

Measured on the 71,163-answer ledgers of `cotpd bench-llm-scale` (89 MB): whole parsed rows kept in
memory took 3.3-4.4x the file's size (the request's messages are most of each row), the stdlib json
parse took ~1.3 s and re-hashing every row's request with `json.dumps` another ~1.5 s. Now only an
`Answer` (the response, and the prompt version `cotpd ledger stats` counts) stays per key; orjson
parses (3x faster than json) and checks each row's key against an orjson serialization of its
request, falling back to the exact stdlib serialization (`key_of`) whenever the two disagree, so a
row is only refused when `key_of` says it is wrong, as before.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import NamedTuple

import orjson

from .base import key_of

# bytes read at a time: the whole file is never in memory at once; 8 MiB blocks left the heap
# fragmented (RSS +1.5x the file for 0.4x of live objects), 256 KiB ones do not (+0.42x)
BLOCK = 1 << 18


class Answer(NamedTuple):
    """What the ledger keeps per key (a tuple: ~0.5 KB with its key, for a ~1.2 KB line)."""
    text: str
    prompt_tokens: int
    completion_tokens: int
    model: str
    created: float
    stage: str | None
    backend: str | None
    prompt_version: str  # of the row's request ("" when it has none): what stats and gc read
    line: int  # the line it was read from (0: appended by this process); `compact` re-reads it


def answer_of(row: dict, line: int, shared: dict) -> Answer:
    """The Answer of a valid row; `shared` holds one copy of each repeated string (model, stage,
    backend, prompt version: a handful of values over tens of thousands of rows)."""
    r = row["response"]
    request = row.get("request")
    version = request.get("prompt_version", "") if isinstance(request, dict) else ""
    model, stage, backend, one = r.get("model", ""), row.get("stage"), row.get("backend"), shared.setdefault
    try:
        model, stage, backend = one(model, model), one(stage, stage), one(backend, backend)
        version = one(version, version)
    except TypeError:  # an unhashable value (a hand-edited line) is kept as it is
        pass
    # tuple.__new__: Answer(...) goes through a Python-level __new__, a quarter of the load's time
    return _new(Answer, (r.get("text", ""), r.get("prompt_tokens", 0), r.get("completion_tokens", 0), model,
                         row.get("created", 0.0), stage, backend, version, line))


_new = tuple.__new__


def read_lines(path: Path) -> Iterator[tuple[int, bytes, bool]]:
    """(line number, line without its newline, is it the last segment) for every line, as
    `path.read_bytes().split(b"\\n")` numbers them: the last segment is b"" when the file ends with
    a newline, and a partial line (a kill mid-write) when it does not."""
    lineno, pending = 0, []  # the pieces of a line not yet ended (a line with an image spans blocks)
    with open(path, "rb") as fh:
        while chunk := fh.read(BLOCK):
            parts = chunk.split(b"\n")
            if len(parts) == 1:
                pending.append(chunk)
                continue
            if pending:
                parts[0] = b"".join([*pending, parts[0]])
            pending = [parts.pop()]
            for raw in parts:
                lineno += 1
                yield lineno, raw, False
    yield lineno + 1, b"".join(pending), True


def parse(raw: bytes):
    """The line's JSON value, or None when it is not JSON. orjson first; what it refuses but the
    stdlib reads (NaN, lone surrogates, UTF-16) is read as the stdlib reads it, as before."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def key_matches(key, request: dict, raw: bytes) -> bool:
    """Is `key` the hash of the row's request (`key_of`)? The orjson serialization (sorted keys,
    compact, UTF-8) is byte for byte what `key_of` hashes for every request written here, in a quarter
    of its time; where it is not (orjson reads integers past 2**64 as floats, formats some floats its
    own way), the exact check decides, on the line parsed by the stdlib. A match is proof enough: two
    requests that serialize to the same bytes are the same JSON value."""
    try:
        if hashlib.sha256(orjson.dumps(request, option=orjson.OPT_SORT_KEYS)).hexdigest() == key:
            return True
    except orjson.JSONEncodeError:
        pass
    exact = json.loads(raw).get("request")
    return isinstance(exact, dict) and key_of(exact) == key


class SummaryRows(Mapping):
    """key -> a row as `Ledger.entries` used to give it, built on access from the Answer: the
    response, stage, backend, created, and of the request only its prompt_version (the messages
    stay in the file). For callers that read rows (cotpd/plan_estimate.py)."""

    def __init__(self, answers: dict[str, Answer]):
        self._answers = answers

    def __getitem__(self, key: str) -> dict:
        a = self._answers[key]
        return {"key": key, "stage": a.stage, "backend": a.backend, "created": a.created,
                "request": {"prompt_version": a.prompt_version},
                "response": {"text": a.text, "prompt_tokens": a.prompt_tokens,
                             "completion_tokens": a.completion_tokens, "model": a.model}}

    def __iter__(self):
        return iter(self._answers)

    def __len__(self) -> int:
        return len(self._answers)


def encode(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows).encode()
