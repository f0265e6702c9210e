"""Mean ± std over seeds, as every bench table prints it (the main report, efficiency, levers)."""
from __future__ import annotations

import statistics
from typing import Sequence


def mean_std(xs: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single seed, which `pm` prints without a ±)."""
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def pm(xs: Sequence, scale: float = 100.0) -> str:
    xs = [x * scale for x in xs if x is not None]
    if not xs:
        return "n/a"
    m, s = mean_std(xs)
    # one seed has no spread: "74.20 ± 0.00" would read as three seeds that agreed exactly
    return f"{m:.2f} ± {s:.2f}" if len(xs) > 1 else f"{m:.2f}"


def signed(xs: Sequence[float], scale: float = 100.0, empty: str = "n/a") -> str:
    """A paired gain: `+1.24 ± 1.54`, one seed without the ±."""
    if not xs:
        return empty
    m, s = mean_std([x * scale for x in xs])
    return f"{m:+.2f}" + (f" ± {s:.2f}" if len(xs) > 1 else "")
