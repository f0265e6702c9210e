"""Load, random faults and per-request accounting for the fake server at scale (`cotpd bench-llm-scale`).

Latency per chat call: a lognormal body (median `median_s`, log-sd `sigma`) and, with probability
`tail_p`, a Pareto tail instead: `tail_from` x median x Pareto(`tail_alpha`) (heavy: alpha 1.5 has a
finite mean, 3x its minimum, and an infinite variance), capped at `cap_s`. With the defaults
(0.15 s, 0.25, 1%, 3x, 1.5) the median is 0.15 s, p99 about 0.45 s, p99.9 about 2 s and the mean
about 0.17 s; `summary()` reports the quantiles of what was actually drawn.

Faults, drawn per request (every route but /_stats, in arrival order from one seeded generator, so
the first N draws are the same on every run): `p429` answers 429 with `Retry-After: retry_after_s`,
`p5xx` a 500/502/503, `pdrop` closes the socket without a response. A faulted request is never
answered, so it costs nothing (like the real APIs).

Accounting: every 200 chat answer and every answered Batch API line is "paid": `paid[h]` holds the
times (unix) each distinct request body h (`body_hash`) was answered, so a request answered twice
shows up as two times under one hash, whatever route answered it.
"""
from __future__ import annotations

import collections
import hashlib
import json
import math
import random
import threading
import time
from dataclasses import asdict, dataclass

FAULT_KINDS = ("429", "5xx", "drop")


def body_hash(body: dict) -> str:
    """The hash a request body is counted under (chat body or a batch line's body: the same fields)."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


@dataclass
class LoadProfile:
    median_s: float = 0.15
    sigma: float = 0.25
    tail_p: float = 0.01
    tail_from: float = 3.0
    tail_alpha: float = 1.5
    cap_s: float = 20.0
    p429: float = 0.01
    p5xx: float = 0.005
    pdrop: float = 0.002
    retry_after_s: int = 1
    batch_delay_s: float = 20.0  # a batch completes this long after it was created
    batch_max_lines: int = 50_000  # the Batch API's limits: a larger input is refused
    batch_max_bytes: int = 200_000_000
    seed: int = 0

    def args(self) -> list[str]:
        """The command line options that rebuild this profile (`python -m cotpd_testing.fake_llm`)."""
        return [a for k, v in asdict(self).items() for a in (f"--{k.replace('_', '-')}", str(v))]


class Load:
    """The drawn latencies and faults, and the paid answers (thread-safe: one lock)."""

    def __init__(self, profile: LoadProfile):
        self.p = profile
        self.rng = random.Random(profile.seed)
        self.lock = threading.Lock()
        self.draws = 0
        self.latencies: list[float] = []
        self.faults: collections.Counter = collections.Counter()
        self.paid: dict[str, list[float]] = {}
        self.batches: list[dict] = []  # one row per batch created: id, lines, bytes

    def draw(self) -> tuple[float, str | None, int]:
        """(seconds to wait, fault kind or None, the HTTP status of a 5xx) for the next request."""
        p, rng = self.p, self.rng
        with self.lock:
            self.draws += 1
            if rng.random() < p.tail_p:
                lat = p.median_s * p.tail_from * rng.paretovariate(p.tail_alpha)
            else:
                lat = p.median_s * math.exp(p.sigma * rng.gauss(0.0, 1.0))
            lat = min(lat, p.cap_s)
            u = rng.random()
            fault = ("429" if u < p.p429 else "5xx" if u < p.p429 + p.p5xx
                     else "drop" if u < p.p429 + p.p5xx + p.pdrop else None)
            code = rng.choice((500, 502, 503))
            self.latencies.append(lat)
            if fault:
                self.faults[fault] += 1
            return lat, fault, code

    def pay(self, body: dict) -> None:
        h, now = body_hash(body), time.time()
        with self.lock:
            self.paid.setdefault(h, []).append(now)

    def summary(self, detail: bool = False) -> dict:
        with self.lock:
            lat = sorted(self.latencies)
            q = (lambda f: round(lat[min(len(lat) - 1, int(f * len(lat)))], 4)) if lat else (lambda f: None)
            out = {"profile": asdict(self.p), "draws": self.draws, "faults": dict(self.faults),
                   "latency_s": {"n": len(lat), "p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "p999": q(0.999),
                                 "max": lat[-1] if lat else None,
                                 "mean": round(sum(lat) / len(lat), 4) if lat else None},
                   "paid_total": sum(len(v) for v in self.paid.values()), "paid_distinct": len(self.paid),
                   "paid_twice": sum(len(v) - 1 for v in self.paid.values() if len(v) > 1),
                   "batches": list(self.batches)}
            if detail:
                out["paid"] = {h: list(v) for h, v in self.paid.items()}
            return out
