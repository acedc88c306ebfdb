"""Timing helpers shared by the benchmarks in this folder (run as scripts, so this
folder is on ``sys.path``)."""

from __future__ import annotations

import time
from collections.abc import Callable


def timed(run: Callable[[], object], runs: int) -> list[float]:
    """Milliseconds of ``runs`` calls of ``run``, after one warm-up call."""
    run()  # warm caches
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    return times


def percentile(values: list[float], share: float) -> float:
    """The nearest-rank value at ``share`` (0.5 for the median, 0.95 for p95)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]
