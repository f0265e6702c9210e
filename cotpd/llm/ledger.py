"""The response ledger: an append-only JSONL cache of every LLM answer, keyed by ChatRequest.key.

One line per response, written with a single `os.write` under an exclusive `flock` before the caller
moves on: once `write` returns the bytes are in the kernel's page cache, so a SIGKILL at any later
moment loses nothing, and two processes appending to the same ledger (two Dagster steps of one
dataset) never interleave bytes. `fsync` (which only matters if the whole machine goes down) is
grouped: at most one per `fsync_interval_s` (50 ms) while answers stream in, plus one on `flush()` /
`close()`, because one fsync per answer (3-10 ms here) would cap a 32-way client at ~150 answers/s.

Line format (no secrets: the canonical request is model, messages, decoding params, prompt version
and sample key; request headers and the API key are never written):

    {"key": ..., "stage": ..., "request": {...}, "response": {"text", "prompt_tokens",
     "completion_tokens", "model"}, "created": unix time, "backend": "openai|local|openai-batch",
     "refresh": false}

Reading rules:
- a line that is not valid JSON (a kill mid-write leaves at most one, at the end) is skipped with a
  warning; the next append first writes a newline so it starts on a fresh line;
- duplicate keys: the first line wins (a racing second writer must not change an answer a stage
  has already used), EXCEPT lines written in `refresh` mode (`"refresh": true`), which replace the
  earlier answer: refreshing is an explicit request for a new one, so later replays see the newest.
"""
from __future__ import annotations

import contextlib
import fcntl
import gc
import json
import logging
import os
import time
from pathlib import Path

from ..errors import DataError
from .base import ChatRequest, ChatResponse

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
    def __init__(self, path: str | Path, fsync_interval_s: float = 0.05):
        self.path = Path(path)
        self.fsync_interval_s = fsync_interval_s
        self._last_sync = 0.0
        self._unsynced = False
        self.entries: dict[str, dict] = {}
        self.skipped_lines = 0  # undecodable lines seen on load
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
        blob = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows).encode()
        fd = self._open()
        fcntl.flock(fd, fcntl.LOCK_EX)
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
