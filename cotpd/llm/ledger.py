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

`compact` rewrites the file (`cotpd ledger gc`): under the same lock, to a temporary file renamed
over it, after a backup copy. A writer that opened the old file notices the rename (another inode
under the path) once it holds the lock and reopens, so no answer is appended to the replaced file.
"""
from __future__ import annotations

import contextlib
import fcntl
import gc
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from ..errors import DataError
from ..io import atomic_write
from .base import ChatRequest, ChatResponse, key_of

log = logging.getLogger(__name__)


@contextlib.contextmanager
def gc_paused():
    """Pause the cyclic garbage collector around a bulk load or replay. Tens of thousands of small
    acyclic dicts trigger its full collections, each of which rescans the whole heap: in a
    long-lived process (a Dagster run worker, pytest, `cotpd bench` with models loaded) that tripled
    the CPU time of a 20,000-answer replay (0.9 s -> 2.7 s). Nothing made here is cyclic."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class Ledger:
    def __init__(self, path: str | Path, fsync_interval_s: float = 1.0):
        self.path = Path(path)
        self.fsync_interval_s = fsync_interval_s
        self._last_sync = 0.0
        self._unsynced = False
        self.entries: dict[str, dict] = {}
        self.skipped_lines = 0  # undecodable lines seen on load
        self.lines = 0  # non-blank lines read (more than len(self): duplicates, superseded, skipped)
        self._fd: int | None = None
        self._load()

    # -- reading ----------------------------------------------------------------------------------
    def _load(self) -> None:
        if not self.path.exists():
            return
        with gc_paused():
            self._parse(self.path.read_bytes().split(b"\n"))

    def _parse(self, lines: list[bytes]) -> None:
        loads = json.loads
        entries = self.entries
        for lineno, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            self.lines += 1
            try:
                row = loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                self.skipped_lines += 1
                where = "truncated last line" if lineno == len(lines) else "undecodable line"
                log.warning("%s:%d: %s skipped (a process killed mid-write?)", self.path, lineno, where)
                continue
            if not isinstance(row, dict) or "key" not in row or not isinstance(row.get("response"), dict):
                raise DataError(self.path, lineno, "ledger line lacks 'key' or 'response'")
            key = row["key"]
            request = row.get("request")
            # rows written by this class always hold their request; one that does must hash to its key
            if isinstance(request, dict) and key_of(request) != key:
                raise DataError(self.path, lineno, f"stored key {str(key)[:16]}... is not the hash of the stored "
                                f"request (sample_key={request.get('sample_key')!r}, prompt_version="
                                f"{request.get('prompt_version')!r}): the line holds another request's answer "
                                "(hand-edited, or merged from another ledger?); fix or delete that line")
            if key not in entries or row.get("refresh"):
                entries[key] = row

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def get(self, key: str) -> ChatResponse | None:
        row = self.entries.get(key)
        if row is None:
            return None
        r = row["response"]
        return ChatResponse(key=key, text=r.get("text", ""), prompt_tokens=r.get("prompt_tokens", 0),
                            completion_tokens=r.get("completion_tokens", 0), model=r.get("model", ""),
                            cached=True, created=row.get("created", 0.0),
                            extra={"stage": row.get("stage"), "backend": row.get("backend")})

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
        blob = _encode(rows)
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
            if r["key"] not in self.entries or r.get("refresh"):
                self.entries[r["key"]] = r

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
        per key (duplicates, superseded and undecodable lines go too), in first-seen order. The old
        file is copied to `backup` first; nothing is written (nor backed up) when nothing would
        change. Returns (rows kept, lines dropped)."""
        fd = self._lock()
        try:
            self.entries, self.skipped_lines, self.lines = {}, 0, 0
            self._load()  # re-read under the lock: what another process appended meanwhile counts
            kept = [row for row in self.entries.values() if keep(row)]
            dropped = self.lines - len(kept)
            if dropped:
                shutil.copy2(self.path, backup)
                with atomic_write(self.path, "wb") as fh:
                    fh.write(_encode(kept))
                self.entries = {row["key"]: row for row in kept}
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


def _encode(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows).encode()
