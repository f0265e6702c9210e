"""The OpenAI Batch API backend (`llm.batch_api: true`): half the price, hours of latency.

Writes one JSONL line per request with `custom_id` = the ledger key, uploads it (purpose "batch"),
creates a batch on /v1/chat/completions, polls until it ends, then reads the output and error
files and hands every answer to the runner, which records it in the ledger.

A batch can run for hours, so the submitted batch id is remembered in a small state file beside
the ledger (`<ledger>.batches.json`, keyed by a digest of the request keys): a process killed while
polling resumes polling the same batch on rerun instead of paying for a second one.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from pathlib import Path

from ..config import LLMCfg
from ..errors import CotpdError
from ..io import read_json, write_json
from .base import ChatRequest
from .client import MalformedResponse, OpenAIBackend, RequestFailed, make_client, parse_completion, run_sync, safe_url

log = logging.getLogger(__name__)
ENDPOINT = "/v1/chat/completions"
DONE = ("completed", "failed", "expired", "cancelled")


def batch_line(req: ChatRequest) -> dict:
    body = {"model": req.model, "messages": list(req.messages), "temperature": req.temperature,
            "max_tokens": req.max_tokens}
    if req.seed is not None:
        body["seed"] = req.seed
    return {"custom_id": req.key, "method": "POST", "url": ENDPOINT, "body": body}


class BatchBackend(OpenAIBackend):
    name = "openai-batch"

    def __init__(self, llm: LLMCfg, state_path: str | Path | None = None, **kwargs):
        super().__init__(llm, **kwargs)
        self.poll_s = llm.batch_poll_s
        self.max_wait_s = llm.batch_max_wait_s
        self.state_path = Path(state_path) if state_path else None

    def describe(self) -> str:
        return f"openai-batch {safe_url(self.base_url)}"

    # -- pending-batch state (only batch ids and digests: nothing secret) ---------------------------
    def _state(self) -> dict:
        return read_json(self.state_path) if self.state_path and self.state_path.exists() else {}

    def _remember(self, digest: str, batch_id: str | None) -> None:
        if not self.state_path:
            return
        state = self._state()
        if batch_id:
            state[digest] = batch_id
        else:
            state.pop(digest, None)
        write_json(self.state_path, state)

    def complete(self, requests: list[ChatRequest], on_result, on_error, on_retry=None) -> None:
        run_sync(lambda: self._complete(requests, on_result, on_error, on_retry))

    async def _complete(self, requests, on_result, on_error, on_retry) -> None:
        if not requests:
            return
        client = make_client(self.base_url, self._api_key, self.timeout_s, self.concurrency)
        retry = lambda err: on_retry and on_retry(requests[0], err)  # noqa: E731
        by_key = {r.key: r for r in requests}
        digest = hashlib.sha256("\n".join(sorted(by_key)).encode()).hexdigest()[:16]
        try:
            batch_id = self._state().get(digest)
            if batch_id:
                log.info("resuming batch %s for %d requests", batch_id, len(requests))
            else:
                data = "".join(json.dumps(batch_line(r), ensure_ascii=False) + "\n" for r in requests).encode()
                f = await self.retrying(lambda: client.files.create(
                    file=("cotpd-batch.jsonl", data, "application/jsonl"), purpose="batch"), on_retry=retry)
                b = await self.retrying(lambda: client.batches.create(
                    input_file_id=f.id, endpoint=ENDPOINT, completion_window="24h"), on_retry=retry)
                batch_id = b.id
                self._remember(digest, batch_id)
                log.info("submitted batch %s (%d requests)", batch_id, len(requests))
            b = await self._wait(client, batch_id, retry)
            seen = set()
            for file_id in (b.output_file_id, b.error_file_id):
                if not file_id:
                    continue
                content = await self.retrying(lambda fid=file_id: client.files.content(fid), on_retry=retry)
                for line in content.text.splitlines():
                    if line.strip():
                        self._deliver(json.loads(line), by_key, seen, on_result, on_error)
            for key in by_key.keys() - seen:
                on_error(by_key[key], RequestFailed(f"batch {batch_id} ended {b.status!r} without an answer"))
            self._remember(digest, None)
        finally:
            await client.close()

    async def _wait(self, client, batch_id: str, retry):
        deadline = time.monotonic() + self.max_wait_s
        while True:
            b = await self.retrying(lambda: client.batches.retrieve(batch_id), on_retry=retry)
            if b.status in DONE:
                return b
            if time.monotonic() > deadline:
                raise CotpdError(f"batch {batch_id} still {b.status!r} after {self.max_wait_s:.0f}s; "
                                 "rerun later to resume polling it")
            await asyncio.sleep(self.poll_s)

    @staticmethod
    def _deliver(row: dict, by_key: dict, seen: set, on_result, on_error) -> None:
        req = by_key.get(row.get("custom_id"))
        if req is None or req.key in seen:
            return  # not ours (or a repeat): ignore
        seen.add(req.key)
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
