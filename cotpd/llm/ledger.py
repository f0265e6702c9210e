"""The response ledger: an append-only JSONL cache of every LLM answer, keyed by ChatRequest.key.

One line per response, written with a single `os.write` under an exclusive `flock` before the caller
moves on: once `write` returns the bytes are in the kernel's page cache, so a SIGKILL at any later
moment loses nothing, and two processes appending to the same ledger (two Dagster steps of one
dataset) never interleave bytes. `fsync` (which only matters if the whole machine goes down) is
grouped: at most one per `fsync_interval_s` (1 s) while answers stream in, plus one on `flush()` /
`close()`, because one fsync per answer (3-10 ms here) would cap a 32-way client at ~150 answers/s;
at 50 ms the fsyncs (7 ms each, blocking the client's event loop) still took 5% of a 64-way
recording's wall time (cotpd bench-llm-scale).

Line format (no secrets: the canonical request is model, messages, decoding params, prompt version
and sample key; request headers and the API key are never written):

    {"key": ..., "stage": ..., "request": {...}, "response": {"text", "prompt_tokens",
     "completion_tokens", "model"}, "created": unix time, "backend": "openai|local|openai-batch",
     "refresh": false}

Reading rules:
- a line that is not valid JSON (a kill mid-write leaves at most one, at the end) is skipped with a
  warning and counted (`skipped_lines`): its answer is simply missing, so it is asked again; the
  next append first writes a newline so it starts on a fresh line;
- a line whose stored key is not the hash of its stored request holds another request's answer (a
  hand edit, a bad merge of two ledgers): serving it would answer the wrong question, so loading
  stops with a DataError naming the file and line;
- duplicate keys: the first line wins (a racing second writer must not change an answer a stage
  has already used), EXCEPT lines written in `refresh` mode (`"refresh": true`), which replace the
  earlier answer: refreshing is an explicit request for a new one, so later replays see the newest.

In memory the ledger keeps one `Answer` per key (the response and the request's prompt version),
not the rows: the requests stay in the file, which `compact` re-reads (ledger_rows.py: 0.4x the
file's size instead of 4x, and a 71k-answer load in ~1 s instead of ~4 s).

`compact` rewrites the file (`cotpd ledger gc`): under the same lock, to a temporary file renamed
over it, after a backup copy. A writer that opened the old file notices the rename (another inode
under the path) once it holds the lock and reopens, so no answer is appended to the replaced file.
"""
from __future__ import annotations

import contextlib
import fcntl
import gc
import hashlib
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import orjson

from ..errors import DataError
from ..io import atomic_write
from .base import ChatRequest, ChatResponse
from .ledger_rows import Answer, SummaryRows, answer_of, encode, key_matches, parse, read_lines

log = logging.getLogger(__name__)


@contextlib.contextmanager
def gc_paused():
    """Pause the cyclic garbage collector around a bulk load or replay. Tens of thousands of small
    acyclic dicts trigger its full collections, each of which rescans the whole heap: in a
    long-lived process (a Dagster run worker, pytest, `cotpd bench` with models loaded) that tripled
    the CPU time of a 20,000-answer replay (0.9 s -> 2.7 s). Nothing made here is cyclic.
    On the way out the objects go to the oldest generation unscanned (gc.freeze then unfreeze, which
    only move lists; skipped where something else keeps objects frozen): else the first collections
    after the pause scan all of them, young then middle-aged, 0.25 s of a 71k-answer replay's 3 s."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            if not gc.get_freeze_count():
                gc.freeze()
                gc.unfreeze()
            gc.enable()


class Ledger:
    def __init__(self, path: str | Path, fsync_interval_s: float = 1.0):
        self.path = Path(path)
        self.fsync_interval_s = fsync_interval_s
        self._last_sync = 0.0
        self._unsynced = False
        self.answers: dict[str, Answer] = {}
        self._shared: dict[str, str] = {}  # one copy of each repeated string (ledger_rows.answer_of)
        self.skipped_lines = 0  # undecodable lines seen on load
        self.lines = 0  # non-blank lines read (more than len(self): duplicates, superseded, skipped)
        self._fd: int | None = None
        self._load()

    # -- reading ----------------------------------------------------------------------------------
    def _load(self) -> None:
        if not self.path.exists():
            return
        answers, shared = self.answers, self._shared
        # the usual line (orjson reads it; a dict whose request hashes, as orjson writes it, to its
        # key) takes a path without calls per line: 0.1 s of a 46k-line load's 0.75 s; any other
        # line goes through parse and _check, as every line did
        loads, dumps, sha256, sort_keys = orjson.loads, orjson.dumps, hashlib.sha256, orjson.OPT_SORT_KEYS
        with gc_paused():
            for lineno, raw, last in read_lines(self.path):
                if not raw or raw.isspace():
                    continue
                self.lines += 1
                try:
                    row = loads(raw)
                    key = row["key"]
                    if (sha256(dumps(row["request"], option=sort_keys)).hexdigest() != key
                            or type(row["response"]) is not dict):
                        raise LookupError
                except (orjson.JSONDecodeError, orjson.JSONEncodeError, LookupError, TypeError):
                    row = parse(raw)
                    if row is None:
                        self.skipped_lines += 1
                        where = "truncated last line" if last else "undecodable line"
                        log.warning("%s:%d: %s skipped (a process killed mid-write?)", self.path, lineno, where)
                        continue
                    key = self._check(row, lineno, raw)
                if key not in answers or row.get("refresh"):
                    answers[key] = answer_of(row, lineno, shared)

    def _check(self, row, lineno: int, raw: bytes):
        """The row's key, once the row is known to hold a response filed under its own request."""
        if not isinstance(row, dict) or "key" not in row or not isinstance(row.get("response"), dict):
            raise DataError(self.path, lineno, "ledger line lacks 'key' or 'response'")
        key = row["key"]
        request = row.get("request")
        # rows written by this class always hold their request; one that does must hash to its key
        if isinstance(request, dict) and not key_matches(key, request, raw):
            raise DataError(self.path, lineno, f"stored key {str(key)[:16]}... is not the hash of the stored "
                            f"request (sample_key={request.get('sample_key')!r}, prompt_version="
                            f"{request.get('prompt_version')!r}): the line holds another request's answer "
                            "(hand-edited, or merged from another ledger?); fix or delete that line")
        return key

    @property
    def entries(self) -> Mapping[str, dict]:
        """key -> the row's response, stage, backend, created and prompt version (ledger_rows.SummaryRows)."""
        return SummaryRows(self.answers)

    def __len__(self) -> int:
        return len(self.answers)

    def __contains__(self, key: str) -> bool:
        return key in self.answers

    def get(self, key: str) -> ChatResponse | None:
        a = self.answers.get(key)
        if a is None:
            return None
        # unpacked and passed by position: 1.3 us a response instead of 2.1 (71k a replay);
        # test_llm_ledger checks every field against ChatResponse(...) by keyword
        text, prompt_tokens, completion_tokens, model, created, stage, backend, _, _ = a
        return ChatResponse(key, text, prompt_tokens, completion_tokens, model, True, created,
                            {"stage": stage, "backend": backend})

    # -- writing ----------------------------------------------------------------------------------
    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        return self._fd

    def append(self, request: ChatRequest, response: ChatResponse, stage: str, backend: str = "",
               refresh: bool = False) -> None:
        """Record one response (in the page cache when this returns; fsync grouped, see above)."""
        row = {
            "key": request.key, "stage": stage, "request": request.canonical(),
            "response": {"text": response.text, "prompt_tokens": response.prompt_tokens,
                         "completion_tokens": response.completion_tokens, "model": response.model},
            "created": response.created or time.time(), "backend": backend, "refresh": bool(refresh),
        }
        self.append_rows([row])

    def append_rows(self, rows: list[dict]) -> None:
        """Append rows in one write: used for single responses and bulk imports."""
        if not rows:
            return
        blob = encode(rows)
        fd = self._lock()
        try:
            # a kill mid-write may have left a partial last line: start ours on a fresh line
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                blob = b"\n" + blob
            view = memoryview(blob)
            while view:
                view = view[os.write(fd, view):]
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
        self._unsynced = True
        if time.monotonic() - self._last_sync >= self.fsync_interval_s:
            self.flush()
        for r in rows:
            if r["key"] not in self.answers or r.get("refresh"):
                self.answers[r["key"]] = answer_of(r, 0, self._shared)

    def _lock(self) -> int:
        """The open file descriptor, exclusively locked, of the file now at `path` (see `compact`)."""
        while True:
            fd = self._open()
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                current = os.stat(self.path).st_ino
            except FileNotFoundError:
                current = None
            if current == os.fstat(fd).st_ino:
                return fd
            fcntl.flock(fd, fcntl.LOCK_UN)  # compacted (renamed over) since we opened it: reopen
            os.close(fd)
            self._fd = None

    def compact(self, keep: Callable[[dict], bool], backup: str | Path) -> tuple[int, int]:
        """Rewrite the ledger with only the answers in use whose row `keep(row)` accepts: one line
        per key (duplicates, superseded and undecodable lines go too), in first-seen order, each
        line as it was. The old file is copied to `backup` first; nothing is written (nor backed
        up) when nothing would change. Returns (rows kept, lines dropped)."""
        fd = self._lock()
        try:
            self.answers, self.skipped_lines, self.lines = {}, 0, 0
            self._load()  # re-read under the lock: what another process appended meanwhile counts
            lines = self.path.read_bytes().split(b"\n") if self.answers else []  # the rows stay in the file
            kept = {key: a for key, a in self.answers.items() if keep(parse(lines[a.line - 1]))}
            dropped = self.lines - len(kept)
            if dropped:
                shutil.copy2(self.path, backup)
                with atomic_write(self.path, "wb") as fh:
                    fh.writelines(lines[a.line - 1] + b"\n" for a in kept.values())
                self.answers = {key: a._replace(line=i) for i, (key, a) in enumerate(kept.items(), start=1)}
                self.lines, self.skipped_lines = len(kept), 0
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            self._fd = None
        return len(kept), dropped

    def flush(self) -> None:
        """fsync what was appended (survives a power cut, not only a killed process)."""
        if self._fd is not None and self._unsynced:
            os.fsync(self._fd)
            self._unsynced = False
        self._last_sync = time.monotonic()

    def close(self) -> None:
        if self._fd is not None:
            self.flush()
            os.close(self._fd)
            self._fd = None

    def __del__(self):
        self.close()

