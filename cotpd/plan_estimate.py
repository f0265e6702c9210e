"""The estimates behind `cotpd plan`: tokens, cost and wall time of the requests a ledger lacks.

Input tokens are counted from the request's own text: with tiktoken's o200k_base encoding when the
package and its encoding file are available offline, else as characters / 4 -- plus the chat
format's overhead of MESSAGE_OVERHEAD tokens per message and REPLY_OVERHEAD per request (OpenAI's
published rule). On the shipped sample ledgers (recorded by the local SmolLM2, whose counts include
its chat template) characters / 4 plus that overhead comes within +5..+12% of the recorded
prompt_tokens (tests/test_plan.py holds it to 25%). An inline image is counted as OpenAI bills it
(detail high: 85 tokens plus 170 per 512-px tile after scaling), never by its base64 length.

Output tokens: max_tokens is the upper bound; the typical length is the mean completion_tokens of
the ledger's answers to the same prompt (any version), else of the whole ledger, else max_tokens.

Wall time online is the largest of three bounds: requests / llm.requests_per_minute; the tokens the
client's rate limiter charges (cotpd.llm.client.estimate_tokens) / llm.tokens_per_minute; and
requests x an assumed latency (LATENCY_S + typical output / OUTPUT_TOKENS_PER_S) / llm.concurrency.
Through the Batch API (llm.batch_api) the job goes in batches (cotpd.llm.batch.split_batches) that
each finish within the 24 h completion window, at half the price.
"""
from __future__ import annotations

import base64
import io
import math
import statistics
from collections import defaultdict
from dataclasses import asdict, dataclass, field

from PIL import Image, UnidentifiedImageError

from .config import LLMCfg
from .llm import ChatRequest, Ledger
from .llm.batch import split_batches
from .llm.client import estimate_tokens

MESSAGE_OVERHEAD, REPLY_OVERHEAD = 3, 3
CHARS_PER_TOKEN = 4
LATENCY_S, OUTPUT_TOKENS_PER_S = 0.5, 60.0  # assumed: a hosted small model's first token and speed
IMAGE_BASE, IMAGE_TILE = 85, 170


class TokenCounter:
    """Counts the input tokens of a request (see the module docstring)."""

    def __init__(self):
        self.name, self._encode = "characters / 4 (tiktoken not installed)", None
        try:
            import tiktoken  # lazy: optional; only a plan counts tokens

            self._encode = tiktoken.get_encoding("o200k_base").encode
            self.name = "tiktoken o200k_base"
        except ImportError:
            pass
        except (OSError, ValueError) as exc:  # installed, but its encoding file is not cached (offline)
            self.name = f"characters / 4 (tiktoken's o200k_base unavailable: {type(exc).__name__})"

    def text(self, text: str) -> int:
        return len(self._encode(text)) if self._encode else math.ceil(len(text) / CHARS_PER_TOKEN)

    def request(self, req: ChatRequest) -> int:
        total = REPLY_OVERHEAD
        for m in req.messages:
            total += MESSAGE_OVERHEAD
            content = m.get("content")
            parts = content if isinstance(content, list) else [{"type": "text", "text": str(content or "")}]
            for p in parts:
                if p.get("type") == "image_url":
                    total += image_tokens((p.get("image_url") or {}).get("url", ""))
                else:
                    total += self.text(str(p.get("text", "")))
        return total


def make_counter() -> TokenCounter:
    return TokenCounter()


def image_tokens(url: str) -> int:
    """OpenAI's price of an inline image at detail high (an unreadable one: one tile)."""
    try:
        data = base64.b64decode(url.split(",", 1)[1])
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
    except (IndexError, ValueError, UnidentifiedImageError, OSError):
        return IMAGE_BASE + IMAGE_TILE
    scale = min(1.0, 2048 / max(w, h))
    w, h = w * scale, h * scale
    scale = min(1.0, 768 / min(w, h))
    return IMAGE_BASE + IMAGE_TILE * math.ceil(w * scale / 512) * math.ceil(h * scale / 512)


def typical_lengths(ledger: Ledger) -> tuple[dict[str, float], float | None]:
    """Mean completion tokens per prompt name in the ledger, and over the whole ledger."""
    per: dict[str, list[int]] = defaultdict(list)
    for row in ledger.entries.values():
        name = str((row.get("request") or {}).get("prompt_version", "")).split(":", 1)[0]
        per[name].append(row["response"].get("completion_tokens") or 0)
    every = [n for v in per.values() for n in v]
    return {k: statistics.fmean(v) for k, v in per.items()}, (statistics.fmean(every) if every else None)


def duration(seconds: float) -> str:
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 60}m {s % 60:02d}s" if s >= 60 else f"{s}s"


@dataclass
class StageEstimate:
    answered: int
    to_send: int
    input_tokens: int  # of the requests to send
    output_tokens_max: int
    output_tokens_typical: int
    cost_usd_max: float
    cost_usd_typical: float
    wall_online_s: float
    wall_online: str
    wall_bound: str  # which limit sets the online wall time
    answered_input_tokens_estimated: int = 0  # the same estimate over the answered requests ...
    answered_input_tokens_recorded: int = 0  # ... and what their answers' usage says (a calibration)
    batches: int | None = None
    batch_input_bytes: int | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def estimate(requests: list[ChatRequest], ledger: Ledger, llm: LLMCfg, counter: TokenCounter) -> StageEstimate:
    unique = list({r.key: r for r in requests}.values())
    todo = [r for r in unique if r.key not in ledger]
    per_prompt, overall = typical_lengths(ledger)
    notes = []
    typical = []
    for r in todo:
        t = per_prompt.get(r.prompt_version.split(":", 1)[0], overall)
        typical.append(min(r.max_tokens, t) if t is not None else r.max_tokens)
    if todo and overall is None:
        notes.append("no answers in the ledger yet: typical output = max_tokens")
    n_in = sum(counter.request(r) for r in todo)
    out_max, out_typ = sum(r.max_tokens for r in todo), round(sum(typical))
    factor = 0.5 if llm.batch_api else 1.0
    cost = lambda out: (n_in * llm.price_per_1m_input + out * llm.price_per_1m_output) / 1e6 * factor
    if todo and llm.backend == "local":
        notes.append("backend local: nothing is billed and rate limits do not apply; cost and wall time "
                     "are for the same requests through backend openai")
    latency = LATENCY_S + (out_typ / len(todo) if todo else 0) / OUTPUT_TOKENS_PER_S
    bounds = {"requests_per_minute": len(todo) / llm.requests_per_minute * 60,
              "tokens_per_minute": sum(estimate_tokens(r) for r in todo) / llm.tokens_per_minute * 60,
              f"concurrency (assumed {latency:.1f} s/request)": len(todo) * latency / llm.concurrency}
    bound = max(bounds, key=bounds.get)
    est = StageEstimate(answered=len(unique) - len(todo), to_send=len(todo), input_tokens=n_in,
                        output_tokens_max=out_max, output_tokens_typical=out_typ,
                        cost_usd_max=round(cost(out_max), 4), cost_usd_typical=round(cost(out_typ), 4),
                        wall_online_s=round(bounds[bound], 1), wall_online=duration(bounds[bound]),
                        wall_bound=bound, notes=notes)
    answered = [r for r in unique if r.key in ledger]
    est.answered_input_tokens_estimated = sum(counter.request(r) for r in answered)
    est.answered_input_tokens_recorded = sum(ledger.get(r.key).prompt_tokens for r in answered)
    if est.answered_input_tokens_recorded:
        ratio = est.answered_input_tokens_estimated / est.answered_input_tokens_recorded - 1
        notes.append(f"input estimate vs the recorded usage of the {len(answered)} answered requests: {ratio:+.0%}")
    if llm.batch_api and todo:
        chunks = split_batches(todo, llm.batch_max_requests)
        est.batches = len(chunks)
        est.batch_input_bytes = sum(len(line) for c in chunks for _, line in c)
        notes.append(f"Batch API: {len(chunks)} batch(es), {est.batch_input_bytes / 1e6:.1f} MB of input, each "
                     "done within its 24 h completion window; costs above are at half price")
    if bound.startswith("tokens") and any(isinstance(m.get("content"), list) for r in todo for m in r.messages):
        notes.append("the client's rate limiter charges an inline image by its base64 length, so tokens_per_minute "
                     "binds long before the provider's limit would")
    return est
