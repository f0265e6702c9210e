"""What `cotpd bench` tells a person watching it: one line per finished training with what is left.

The estimate of a training comes from the finished main-grid trainings of the same dataset and
variant (this invocation's and reused ones); a training with none yet is counted, not guessed.
"""
from __future__ import annotations

from typing import Iterable

from .spec import RunSpec


def estimate(records: Iterable[dict], spec: RunSpec) -> float:
    """Expected seconds of a training from the main-grid runs of the same dataset and variant
    (evaluation on the full dev/test sets does not shrink with the training fraction); 0.0: unknown."""
    past = [r["seconds"] for r in records
            if (r["dataset"], r["variant"], r["group"]) == (spec.dataset, spec.variant, "main")]
    return (sum(past) / len(past)) * max(spec.fraction, 0.4) if past else 0.0


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def finished_line(key: str, rec: dict, n: int, left: list[float], elapsed: float) -> str:
    """`n`: trainings this invocation has finished; `left`: the estimates of those still to run
    (0.0 where none is possible yet)."""
    f1 = rec.get("test_f1")
    score = f"test F1 {100 * f1:.2f}" if isinstance(f1, (int, float)) else "no test F1"
    known = [s for s in left if s > 0]
    if not left:
        rest = "none left"
    else:
        rest = f"{len(left)} left, ETA {duration(sum(known))}" if known else f"{len(left)} left, ETA unknown"
        if known and len(known) < len(left):
            rest += f" + {len(left) - len(known)} not yet estimable"
    return f"[{n}/{n + len(left)}] {key} done in {duration(rec['seconds'])}: {score}; {rest} ({duration(elapsed)} elapsed)"
