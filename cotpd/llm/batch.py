"""The OpenAI Batch API backend (`llm.batch_api: true`): half the price, hours of latency.

The requests are split into batches within the API's limits (`llm.batch_max_requests`, at most
50,000, and MAX_FILE_BYTES of input file, 200 MB): one JSONL line per request with `custom_id` = the
ledger key, uploaded (purpose "batch"), one batch each on /v1/chat/completions. Every batch is
polled until it ends; its output and error files are read and every answer handed to the runner,
which records it in the ledger.

A batch can run for hours, so each submitted batch is remembered in a state file beside the ledger
(`<ledger>.batches.json`: batch id -> the keys it answers, written atomically right after the
batch is created). A process killed while polling resumes polling the same batches on rerun instead
of paying for them again; only requests that no pending batch covers go into new batches. A batch
leaves the state file once its answers are recorded (the file goes when the last one does).

A result row whose custom_id is not one of its batch's keys is reported (a warning naming the batch
and the ids) and never recorded: an answer filed under the wrong key would be replayed forever.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

from ..config import LLMCfg
from ..errors import CotpdError, DataError
from ..io import read_json, write_json
from .base import ChatRequest
from .client import (
    MalformedResponse,
    OpenAIBackend,
    RequestFailed,
    make_client,
    parse_completion,
    run_sync,
    safe_url,
)

log = logging.getLogger(__name__)
ENDPOINT = "/v1/chat/completions"
DONE = ("completed", "failed", "expired", "cancelled")
MAX_FILE_BYTES = 200 * 1000 * 1000  # the Batch API's input file limit (200 MB)


def batch_line(req: ChatRequest) -> dict:
    body = {"model": req.model, "messages": list(req.messages), "temperature": req.temperature,
            "max_tokens": req.max_tokens}
    if req.seed is not None:
        body["seed"] = req.seed
    return {"custom_id": req.key, "method": "POST", "url": ENDPOINT, "body": body}


def encode_line(req: ChatRequest) -> bytes:
    return (json.dumps(batch_line(req), ensure_ascii=False) + "\n").encode("utf-8")


def split_batches(requests: list[ChatRequest], max_requests: int, max_bytes: int = MAX_FILE_BYTES,
                  ) -> list[list[tuple[ChatRequest, bytes]]]:
    """Consecutive chunks of (request, input line), each within both limits."""
    chunks: list[list[tuple[ChatRequest, bytes]]] = []
    size = 0
    for req in requests:
        line = encode_line(req)
        if len(line) > max_bytes:
            raise CotpdError(f"one Batch API line is {len(line)} bytes, over the {max_bytes}-byte file limit "
                             f"(sample_key={req.sample_key!r}); send it without llm.batch_api")
        if not chunks or len(chunks[-1]) >= max_requests or size + len(line) > max_bytes:
            chunks.append([])
            size = 0
        chunks[-1].append((req, line))
        size += len(line)
    return chunks


class BatchState:
    """`<ledger>.batches.json`: {"batches": {batch id: {"keys": [...], "submitted": unix time}}}.
    Only batch ids and ledger keys: nothing secret."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self.batches: dict[str, dict] = {}
        if self.path and self.path.exists():
            raw = read_json(self.path)
            if not isinstance(raw, dict) or not isinstance(raw.get("batches", {}), dict):
                raise DataError(self.path, None, "expected {\"batches\": {batch id: {\"keys\": [...]}}}")
            if raw and "batches" not in raw:  # the first format: digest -> id, without the keys to match
                log.warning("%s: batches %s from an older cotpd cannot be matched to requests; they are "
                            "not resumed", self.path, sorted(map(str, raw.values())))
            self.batches = dict(raw.get("batches", {}))

    def add(self, batch_id: str, keys: list[str]) -> None:
        self.batches[batch_id] = {"keys": keys, "submitted": time.time()}
        self._save()

    def drop(self, batch_id: str) -> None:
        if self.batches.pop(batch_id, None) is not None:
            self._save()

    def _save(self) -> None:
        if self.path and self.batches:
            write_json(self.path, {"batches": self.batches})
        elif self.path:  # nothing left to resume: no file beside the ledger
            self.path.unlink(missing_ok=True)


class BatchBackend(OpenAIBackend):
    name = "openai-batch"

    def __init__(self, llm: LLMCfg, state_path: str | Path | None = None, **kwargs):
        super().__init__(llm, **kwargs)
        self.poll_s = llm.batch_poll_s
        self.max_wait_s = llm.batch_max_wait_s
        self.max_requests = llm.batch_max_requests
        self.state_path = Path(state_path) if state_path else None

    def describe(self) -> str:
        return f"openai-batch {safe_url(self.base_url)}"

    def complete(self, requests: list[ChatRequest], on_result, on_error, on_retry=None) -> None:
        run_sync(lambda: self._complete(requests, on_result, on_error, on_retry))

    async def _complete(self, requests, on_result, on_error, on_retry) -> None:
        if not requests:
            return
        client = make_client(self.base_url, self._api_key, self.timeout_s, self.concurrency)
        retry = lambda err: on_retry and on_retry(requests[0], err)
        by_key = {r.key: r for r in requests}
        state = BatchState(self.state_path)
        try:
            pending: dict[str, set] = {}  # batch id -> the keys it answers
            for batch_id, entry in state.batches.items():
                keys = set(entry.get("keys", []))
                if keys & by_key.keys():
                    log.info("resuming batch %s (%d requests)", batch_id, len(keys))
                    pending[batch_id] = keys
            covered = set().union(*pending.values()) if pending else set()
            for chunk in split_batches([r for r in requests if r.key not in covered], self.max_requests):
                data = b"".join(line for _, line in chunk)
                f = await self.retrying(lambda data=data: client.files.create(
                    file=("cotpd-batch.jsonl", data, "application/jsonl"), purpose="batch"), on_retry=retry)
                b = await self.retrying(lambda fid=f.id: client.batches.create(
                    input_file_id=fid, endpoint=ENDPOINT, completion_window="24h"), on_retry=retry)
                keys = [r.key for r, _ in chunk]
                state.add(b.id, keys)  # before polling: a kill from here on resumes this batch
                pending[b.id] = set(keys)
                log.info("submitted batch %s (%d requests, %d bytes)", b.id, len(chunk), len(data))
            await self._collect(client, pending, by_key, state, on_result, on_error, retry)
        finally:
            await client.close()

    async def _collect(self, client, pending: dict, by_key: dict, state: BatchState, on_result, on_error,
                       retry) -> None:
        """Poll every pending batch until it ends; deliver each one's answers as soon as it does."""
        deadline = time.monotonic() + self.max_wait_s
        while pending:
            for batch_id in list(pending):
                b = await self.retrying(lambda bid=batch_id: client.batches.retrieve(bid), on_retry=retry)
                if b.status not in DONE:
                    continue
                keys = pending.pop(batch_id)
                seen: set = set()
                for file_id in (b.output_file_id, b.error_file_id):
                    if file_id:
                        content = await self.retrying(lambda fid=file_id: client.files.content(fid),
                                                      on_retry=retry)
                        self._read_results(batch_id, file_id, content.text, keys, by_key, seen,
                                           on_result, on_error)
                for key in (keys & by_key.keys()) - seen:
                    on_error(by_key[key], RequestFailed(f"batch {batch_id} ended {b.status!r} without an answer"))
                state.drop(batch_id)
            if not pending:
                return
            if time.monotonic() > deadline:
                raise CotpdError(f"batches {sorted(pending)} still running after {self.max_wait_s:.0f}s; "
                                 "rerun later to resume polling them")
            await asyncio.sleep(self.poll_s)

    def _read_results(self, batch_id: str, file_id: str, text: str, keys: set, by_key: dict, seen: set,
                      on_result, on_error) -> None:
        unknown, repeated = [], 0
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"batch {batch_id} file {file_id}", lineno, f"not valid JSON: {exc.msg}") from None
            cid = row.get("custom_id") if isinstance(row, dict) else None
            if cid not in keys:
                unknown.append(str(cid))
            elif cid in seen:
                repeated += 1
            elif cid in by_key:  # a key of this batch that this run no longer asks for is not recorded
                seen.add(cid)
                self._deliver(row, by_key[cid], on_result, on_error)
        if unknown:
            log.warning("batch %s file %s: %d result rows for custom_ids this batch never sent were NOT "
                        "recorded: %s", batch_id, file_id, len(unknown), unknown[:5])
        if repeated:
            log.warning("batch %s file %s: %d repeated result rows ignored (the first answer is kept)",
                        batch_id, file_id, repeated)

    @staticmethod
    def _deliver(row: dict, req: ChatRequest, on_result, on_error) -> None:
        resp = row.get("response") or {}
        if row.get("error") or resp.get("status_code") != 200:
            msg = (row.get("error") or {}).get("message") or f"HTTP {resp.get('status_code')}"
            on_error(req, RequestFailed(f"batch line failed: {msg}"))
            return
        try:
            out = parse_completion(req.key, json.dumps(resp.get("body")))
        except MalformedResponse as exc:  # a malformed line fails that request only
            on_error(req, RequestFailed(str(exc)))
            return
        out.extra["batch"] = True
        on_result(req, out)
