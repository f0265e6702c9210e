"""The OpenAI-compatible backend: one async client for api.openai.com, vLLM, llama.cpp, Ollama...

Concurrency is an asyncio.Semaphore; a token bucket keeps requests/min and tokens/min under the
configured limits; failures are retried by OUR policy only (the openai package's own retries are
off, `max_retries=0`): transient ones (429, 408/409, 5xx, timeouts, dropped connections, malformed
bodies) with exponential backoff and jitter, honouring `Retry-After`; 400/422 fail that request;
401/403/404 abort the whole run at once (every other request would fail the same way).

The API key comes from $OPENAI_API_KEY and lives only inside the openai client object: it is never
in a repr, an error message, a log line or the ledger.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import json
import logging
import os
import random
import time
from typing import Callable
from urllib.parse import urlsplit

import httpx2
import openai

from ..config import LLMCfg
from ..errors import ConfigError, CotpdError
from .base import ChatRequest, ChatResponse

try:  # uvloop's event loop takes a good part of the client's per-request CPU off (see _run)
    import uvloop
except ImportError:  # Windows, or a slim install: the standard loop works, only slower
    uvloop = None

log = logging.getLogger(__name__)
# httpx2 logs one INFO line per request: at tens of thousands of requests that is the bulk of a
# stage's log and ~0.4 ms of the event loop's time each (cotpd bench-llm-scale); our progress lines
# report the rate instead, and -v still shows them
logging.getLogger("httpx2").setLevel(logging.WARNING)
SHARD_SIZE = 16  # connections per client; see OpenAIBackend._complete
STORM = (50, 5)  # a 429 pauses every request only if >= 5 of the last 50 answers were 429s
NO_KEY = "sk-no-key"  # local servers (vLLM, llama.cpp) accept any key; the openai client wants one


class FatalLLMError(CotpdError):
    """An error every other request would hit too (bad key, unknown model): abort the run."""


class RequestFailed(CotpdError):
    """One request failed permanently (not transient, or out of retries)."""


class MalformedResponse(Exception):
    """The server answered 200 with a body that is not a chat completion (retried)."""


def safe_url(url: str | None) -> str:
    """A base URL fit for logs and the ledger: no user:password, no query string."""
    if not url:
        return "https://api.openai.com/v1"
    p = urlsplit(str(url))
    return f"{p.scheme}://{p.hostname or ''}{f':{p.port}' if p.port else ''}{p.path}"


def resolve_api_key(base_url: str | None) -> str:
    key = os.environ.get("OPENAI_API_KEY", "").strip()
    if key:
        return key
    if base_url:  # a self-hosted endpoint usually needs no key
        return NO_KEY
    raise ConfigError("OPENAI_API_KEY is not set (needed for llm.backend: openai without llm.base_url)")


def _run(coro):
    """asyncio.run on uvloop where it exists: the client's per-request CPU is what limits a 32-wide
    stage on a small machine, and uvloop's event loop takes a good part of it off."""
    return asyncio.run(coro) if uvloop is None else uvloop.run(coro)


def run_sync(coro_factory: Callable[[], object]):
    """Run a coroutine from sync code, also when the caller already runs an event loop (Jupyter)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _run(coro_factory())
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: _run(coro_factory())).result()


def parse_retry_after(headers) -> float | None:
    """Seconds from `retry-after-ms` / `Retry-After` (HTTP-date form is rare here: ignored)."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name) if headers is not None else None
        if value is not None:
            try:
                return max(0.0, float(value) * scale)
            except ValueError:
                continue
    return None


class RateLimiter:
    """Token buckets for requests/min and tokens/min, with one second of burst; `pause` after 429s.

    A 429 delays its own request by its Retry-After; it pauses every request only when 429s are a
    storm (`STORM`: the provider's limit is exhausted and every request would hit it). An isolated
    429 (1% of answers in cotpd bench-llm-scale) pausing all 64 requests in flight for 1 s each time
    cut the throughput to a fifth."""

    def __init__(self, rpm: float, tpm: float):
        self.rates = (max(rpm, 1e-9) / 60.0, max(tpm, 1e-9) / 60.0)
        self.caps = tuple(max(1.0, r) for r in self.rates)
        self.levels = list(self.caps)
        self.stamp = time.monotonic()
        self.paused_until = 0.0
        self.recent: collections.deque = collections.deque(maxlen=STORM[0])  # True: a 429

    def note(self, rate_limited: bool) -> None:
        self.recent.append(rate_limited)

    def storm(self) -> bool:
        return sum(self.recent) >= STORM[1]

    def pause(self, seconds: float) -> None:
        self.paused_until = max(self.paused_until, time.monotonic() + seconds)

    async def acquire(self, tokens: float) -> None:
        need = (1.0, min(float(tokens), self.caps[1]))
        while True:  # single event loop thread: no lock needed between the check and the take
            now = time.monotonic()
            for i in (0, 1):
                self.levels[i] = min(self.caps[i], self.levels[i] + (now - self.stamp) * self.rates[i])
            self.stamp = now
            wait = max(self.paused_until - now,
                       *((need[i] - self.levels[i]) / self.rates[i] for i in (0, 1)))
            if wait <= 0:
                self.levels[0] -= need[0]
                self.levels[1] -= need[1]
                return
            await asyncio.sleep(wait)


def estimate_tokens(req: ChatRequest) -> int:
    chars = sum(len(json.dumps(m.get("content", ""), ensure_ascii=False)) for m in req.messages)
    return chars // 4 + req.max_tokens


def make_client(base_url: str | None, api_key: str, timeout_s: float, concurrency: int):
    return openai.AsyncOpenAI(api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout_s)


class OpenAIBackend:
    name = "openai"

    def __init__(self, llm: LLMCfg, backoff_max_s: float = 30.0, max_retry_after_s: float = 120.0):
        self.base_url = llm.base_url
        self._api_key = resolve_api_key(llm.base_url)
        self.concurrency = llm.concurrency
        self.rpm, self.tpm = llm.requests_per_minute, llm.tokens_per_minute
        self.max_retries = llm.max_retries
        self.timeout_s = llm.timeout_s
        self.backoff = (llm.backoff_base_s, backoff_max_s)
        self.max_retry_after_s = max_retry_after_s

    def __repr__(self) -> str:  # never the key
        return f"OpenAIBackend(base_url={safe_url(self.base_url)!r}, concurrency={self.concurrency})"

    def describe(self) -> str:
        return f"openai {safe_url(self.base_url)}"

    def redact(self, text: str) -> str:
        return text.replace(self._api_key, "sk-***") if self._api_key and self._api_key != NO_KEY else text

    # -- one request ------------------------------------------------------------------------------
    async def _once(self, client, req: ChatRequest) -> ChatResponse:
        kwargs = dict(model=req.model, messages=list(req.messages), temperature=req.temperature,
                      max_tokens=req.max_tokens)
        if req.seed is not None:
            kwargs["seed"] = req.seed
        # the low-level post skips the typed request transform and response model (a third of the
        # client's CPU per call); auth, base_url, timeout and error mapping are the openai client's
        raw = await client.post("/chat/completions", body=kwargs, cast_to=httpx2.Response)
        return parse_completion(req.key, raw.text)

    async def call(self, client, limiter: RateLimiter, req: ChatRequest, on_retry=None) -> ChatResponse:
        return await self.retrying(lambda: self._once(client, req), limiter, estimate_tokens(req),
                                   req.sample_key or req.key[:12], lambda err: on_retry and on_retry(req, err))

    async def retrying(self, make_coro, limiter: RateLimiter | None = None, tokens: float = 1,
                       label: str = "", on_retry=None):
        """Await `make_coro()` under our retry policy (see the module docstring)."""
        attempt = 0
        while True:
            if limiter is not None:
                await limiter.acquire(tokens)
            retry_after = None
            try:
                result = await make_coro()
                if limiter is not None:
                    limiter.note(False)
                return result
            except openai.AuthenticationError:
                raise FatalLLMError(f"authentication failed for {safe_url(self.base_url)}: "
                                    "check OPENAI_API_KEY") from None
            except openai.APIStatusError as exc:
                code = exc.status_code
                err = self.redact(f"HTTP {code} from {safe_url(self.base_url)}: {exc.message}")
                if code in (403, 404):
                    raise FatalLLMError(err) from None
                if not (code in (408, 409, 429) or code >= 500):
                    raise RequestFailed(err) from None
                retry_after = parse_retry_after(exc.response.headers)
                if limiter is not None:
                    limiter.note(code == 429)
                if retry_after is not None:
                    retry_after = min(retry_after, self.max_retry_after_s)
                    if limiter is not None and code == 429 and limiter.storm():
                        limiter.pause(retry_after)  # the provider's limit, not this request: all of us wait
            except (openai.APIConnectionError, MalformedResponse) as exc:  # includes timeouts
                err = f"{type(exc).__name__} from {safe_url(self.base_url)}: {self.redact(str(exc))}"
            if attempt >= self.max_retries:
                raise RequestFailed(f"gave up after {attempt + 1} attempts: {err}")
            cap = min(self.backoff[1], self.backoff[0] * 2 ** attempt)
            delay = retry_after if retry_after is not None else cap / 2 + random.uniform(0, cap / 2)
            log.debug("retry %d for %s in %.2fs: %s", attempt + 1, label, delay, err)
            if on_retry:
                on_retry(err)
            attempt += 1
            await asyncio.sleep(delay)

    # -- many requests ----------------------------------------------------------------------------
    def complete(self, requests: list[ChatRequest], on_result, on_error, on_retry=None) -> None:
        """Answer `requests`; `on_result(req, resp)` runs as each answer arrives (in this thread),
        `on_error(req, exc)` for each permanent failure; a FatalLLMError is raised after the
        requests already in flight have finished (and been passed to on_result)."""
        run_sync(lambda: self._complete(requests, on_result, on_error, on_retry))

    async def _complete(self, requests, on_result, on_error, on_retry) -> None:
        # one client per SHARD_SIZE connections: httpcore2's pool scans (and polls) every connection
        # it holds on each request, so one pool of 64 cost milliseconds of CPU per request here, the
        # most of the client's time (cProfile, cotpd bench-llm-scale)
        clients = [make_client(self.base_url, self._api_key, self.timeout_s, SHARD_SIZE)
                   for _ in range(-(-self.concurrency // SHARD_SIZE))]
        limiter = RateLimiter(self.rpm, self.tpm)
        fatal: list[BaseException] = []

        async def one(client, req):
            try:
                resp = await self.call(client, limiter, req, on_retry)
            except FatalLLMError as exc:
                fatal.append(exc)
                return
            except RequestFailed as exc:
                on_error(req, exc)
                return
            try:
                on_result(req, resp)
            except BaseException as exc:  # e.g. the ledger disk is full: stop, keep the cause
                fatal.append(exc)

        todo = iter(requests[1:])

        async def worker(client):
            # `concurrency` workers share one iterator: each request is taken by exactly one, and
            # memory stays O(concurrency), not one task per request (70,000 in a full recording)
            for req in todo:
                if fatal:
                    return
                await one(client, req)

        try:
            # the first request goes alone: a bad key or model fails after exactly one request
            if requests:
                await one(clients[0], requests[0])
            if not fatal:
                await asyncio.gather(*(worker(clients[i % len(clients)]) for i in range(self.concurrency)))
        finally:
            for client in clients:
                await client.close()
        if fatal:
            raise fatal[0]


def parse_completion(key: str, body: str) -> ChatResponse:
    """A ChatResponse from a chat.completion JSON body (a dict-level parse: vLLM & co. add fields)."""
    try:
        data = json.loads(body)
        choice = data["choices"][0]
        text = choice["message"].get("content") or ""
        usage = data.get("usage") or {}
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        raise MalformedResponse(f"malformed response body ({len(body)} bytes)") from None
    model = str(data.get("model") or "")
    if data.get("system_fingerprint"):
        model += f"@{data['system_fingerprint']}"
    return ChatResponse(key=key, text=text, prompt_tokens=int(usage.get("prompt_tokens") or 0),
                        completion_tokens=int(usage.get("completion_tokens") or 0), model=model,
                        created=time.time(), extra={"finish_reason": choice.get("finish_reason")})
