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

A kill between `batches.create` returning and that write, or a create retried after its answer was
lost, would leave a paid batch no state names (issue #23). So each chunk's id (sha256 of its keys in
order) goes into batch metadata `cotpd_chunk`, and its intent (id, keys, time) into the state before
the upload, then the uploaded file's id once known; a rerun (or a retried create) lists the server's
batches since then and adopts the one with that id made from that file unless it failed, expired or
was cancelled. The file pins the batch to this submission: another run of the same requests (another
project on the same key) makes batches with the same chunk id, paid by that run, not ours. A chunk
without an intent (lost state file) adopts a still-running batch with its id from the last 24 h.

A result row whose custom_id is not one of its batch's keys is reported (a warning naming the batch
and the ids) and never recorded: an answer filed under the wrong key would be replayed forever.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from pathlib import Path

from ..config import LLMCfg
from ..errors import CotpdError, DataError
from .base import ChatRequest
from .batch_state import BatchState, made_from
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
FAILED = ("failed", "expired", "cancelled")  # such a batch answers nothing: its chunk is sent anew
MAX_FILE_BYTES = 200 * 1000 * 1000  # the Batch API's input file limit (200 MB)
CHUNK_META = "cotpd_chunk"  # the batch metadata key holding chunk_id(keys)
LOOKBACK_S = 24 * 3600  # the completion window: an older batch without an intent has ended long ago
CLOCK_SLACK_S = 3600  # created_at is the server's clock, an intent's time is ours


def batch_line(req: ChatRequest) -> dict:
    body = {"model": req.model, "messages": list(req.messages), "temperature": req.temperature,
            "max_tokens": req.max_tokens}
    if req.seed is not None:
        body["seed"] = req.seed
    return {"custom_id": req.key, "method": "POST", "url": ENDPOINT, "body": body}


def encode_line(req: ChatRequest) -> bytes:
    return (json.dumps(batch_line(req), ensure_ascii=False) + "\n").encode("utf-8")


def chunk_id(keys: list[str]) -> str:
    """The chunk's id on the server (batch metadata): the same keys in the same order, the same id."""
    return hashlib.sha256("\n".join(keys).encode("utf-8")).hexdigest()


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
        fetch = lambda make: self.retrying(make, on_retry=retry)
        try:
            found: dict = {}  # chunk id -> the usable batches on the server carrying it, newest first
            if state.intents or by_key.keys() - {k for e in state.batches.values() for k in e.get("keys", [])}:
                found = await self._list_chunks(client, self._since(state), fetch)
            for chunk, intent in list(state.intents.items()):
                b = made_from(found.get(chunk, []), intent)
                if b is not None and b.id not in state.batches:
                    log.info("adopting batch %s (%s) of an interrupted submission", b.id, b.status)
                    state.add(b.id, intent["keys"], chunk)
                else:  # killed before batches.create, or the batch failed: nothing to wait for
                    state.forget(chunk)
            pending: dict[str, set] = {}  # batch id -> the keys it answers
            for batch_id, entry in state.batches.items():
                keys = set(entry.get("keys", []))
                if keys & by_key.keys():
                    log.info("resuming batch %s (%d requests)", batch_id, len(keys))
                    pending[batch_id] = keys
            covered = set().union(*pending.values()) if pending else set()
            for chunk in split_batches([r for r in requests if r.key not in covered], self.max_requests):
                keys = [r.key for r, _ in chunk]
                cid = chunk_id(keys)
                b = next(iter(found.get(cid, [])), None)
                if b is not None and b.status not in DONE and b.id not in state.batches:
                    log.info("adopting running batch %s of the same requests", b.id)
                else:
                    state.intend(cid, keys)  # before the upload: a rerun looks for this chunk's batch
                    b = await self._submit(client, chunk, cid, fetch, state)
                state.add(b.id, keys, cid)  # before polling: a kill from here on resumes this batch
                pending[b.id] = set(keys)
            await self._collect(client, pending, by_key, state, on_result, on_error, retry)
        finally:
            await client.close()

    @staticmethod
    def _since(state: BatchState) -> float:  # the oldest intent, at least LOOKBACK_S back, less the slack
        return min([time.time() - LOOKBACK_S] + [i.get("at", 0.0) for i in state.intents.values()]) - CLOCK_SLACK_S

    async def _list_chunks(self, client, since: float, fetch, page_size: int = 100) -> dict:
        """Chunk id -> its batches created since `since` and not FAILED, newest first (`fetch` awaits a
        page's call)."""
        found: dict = {}
        after: dict = {}
        while True:
            page = await fetch(lambda after=after: client.batches.list(limit=page_size, **after))
            for b in page.data:
                if b.created_at < since:
                    return found
                cid = (b.metadata or {}).get(CHUNK_META)
                if cid and b.status not in FAILED:
                    found.setdefault(cid, []).append(b)
            if not page.has_more or not page.data:
                return found
            after = {"after": page.data[-1].id}

    async def _submit(self, client, chunk: list, cid: str, fetch, state: BatchState):
        data = b"".join(line for _, line in chunk)
        f = await fetch(lambda: client.files.create(
            file=("cotpd-batch.jsonl", data, "application/jsonl"), purpose="batch"))
        state.uploaded(cid, f.id)
        since = time.time() - CLOCK_SLACK_S
        tries = 0

        async def create():
            nonlocal tries
            tries += 1
            if tries > 1:  # the last try may have created the batch before its answer was lost
                b = made_from((await self._list_chunks(client, since, lambda make: make())).get(cid, []),
                              {"file": f.id})
                if b is not None:
                    return b
            return await client.batches.create(input_file_id=f.id, endpoint=ENDPOINT, completion_window="24h",
                                               metadata={CHUNK_META: cid})

        b = await fetch(create)
        log.info("submitted batch %s (%d requests, %d bytes)", b.id, len(chunk), len(data))
        return b

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
