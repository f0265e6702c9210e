"""What `cotpd bench-llm-scale` checks after a run: ledgers read back, answers paid at the server.

The fake server counts paid answers per request BODY (cotpd_testing.fake_llm_load.body_hash); the
ledger is keyed by the canonical request, which adds the prompt version and the sample key. Two
ledger keys can share a body (the same tweet twice in a dataset): each is asked once, so the body
is legitimately paid once per key. "Paid twice" is therefore: answers to a body beyond the number
of distinct ledger keys that have it.
"""
from __future__ import annotations

import collections
import json
from pathlib import Path

from cotpd_testing.fake_llm_load import body_hash

from ..params import Layout

STAGE = "knowledge"


def request_body(canonical: dict) -> dict:
    """The body the chat client (and a Batch API line) sends for a canonical request (client._once)."""
    body = {"model": canonical["model"], "messages": canonical["messages"],
            "temperature": canonical["temperature"], "max_tokens": canonical["max_tokens"]}
    if canonical.get("seed") is not None:
        body["seed"] = canonical["seed"]
    return body


def read_ledgers(root: Path, datasets: list[str]) -> dict:
    """key -> body hash of every answer in the knowledge ledgers under `root`, and what is on disk."""
    keys: dict[str, str] = {}
    files, size, lines, bad = [], 0, 0, 0
    for ds in datasets:
        path = Layout(root, ds).ledger_for(STAGE)
        if not path.exists():
            continue
        files.append(str(path.relative_to(root)))
        size += path.stat().st_size
        with open(path, "rb") as fh:
            for raw in fh:
                if not raw.strip():
                    continue
                lines += 1
                try:
                    row = json.loads(raw)
                except json.JSONDecodeError:  # the line a kill cut off: that answer is missing
                    bad += 1
                    continue
                keys.setdefault(row["key"], body_hash(request_body(row["request"])))
    extra = sorted(str(p.relative_to(root)) for p in (root / "ledger").rglob("*") if p.is_file()) \
        if (root / "ledger").exists() else []
    return {"keys": keys, "files": files, "all_files": extra, "bytes": size, "lines": lines, "cut_lines": bad}


def paid_between(before: dict, after: dict) -> dict[str, list[float]]:
    """body hash -> the times it was paid between two /_stats?detail=1 snapshots (lists only grow)."""
    b, a = before["load"]["paid"], after["load"]["paid"]
    return {h: times[len(b.get(h, ())):] for h, times in a.items() if len(times) > len(b.get(h, ()))}


def check_complete(expected: dict, final: dict, paid: dict[str, list[float]]) -> dict:
    """A run from an empty ledger to the end: every request answered once, each paid once."""
    per_body = collections.Counter(expected.values())
    return {"requests": len(expected), "answered": len(expected.keys() & final.keys()),
            "lost": len(expected.keys() - final.keys()),
            "paid": sum(len(t) for t in paid.values()),
            "paid_twice": sum(max(0, len(paid.get(h, ())) - n) for h, n in per_body.items()),
            "paid_not_asked": sum(len(t) for h, t in paid.items() if h not in per_body)}


def check_kill(expected: dict, after_kill: dict, final: dict, run1: dict, run2: dict, kill_t: float) -> dict:
    """A run SIGKILLed at `kill_t` (unix time) and its rerun.

    - lost: requests without an answer in the final ledger (goal 0);
    - reasked_from_ledger: answers paid in the rerun to requests the ledger already answered after
      the kill (goal 0: the rerun must not re-ask what is recorded);
    - paid_twice: all answers beyond one per request, split by when the first run's extra answer was
      paid: before the kill (the window between the server's answer and the ledger write: the answer
      was in flight or being written) or after it (the server finished a request the dead client had
      sent; any client pays those)."""
    per_body = collections.Counter(expected.values())
    in_ledger = collections.Counter(after_kill[k] for k in after_kill.keys() & expected.keys())
    out = check_complete(expected, final, {h: run1.get(h, []) + run2.get(h, []) for h in run1.keys() | run2.keys()})
    reasked = window_before = window_after = 0
    for h, n in per_body.items():
        first, second = run1.get(h, []), run2.get(h, [])
        reasked += max(0, len(second) - (n - in_ledger[h]))
        unrecorded = sorted(first)[in_ledger[h]:] if len(first) > in_ledger[h] else []
        # of the first run's answers not in its ledger, those the rerun paid again are the paid-twice ones
        twice = max(0, len(first) + len(second) - n)
        for t in unrecorded[:twice]:
            window_before += t < kill_t
            window_after += t >= kill_t
    out.update(recorded_before_kill=len(after_kill.keys() & expected.keys()),
               paid_first_run=sum(len(t) for t in run1.values()), paid_rerun=sum(len(t) for t in run2.values()),
               reasked_from_ledger=reasked, paid_twice_answered_before_kill=window_before,
               paid_twice_answered_after_kill=window_after)
    return out
