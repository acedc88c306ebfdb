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


def wait_until_quiet(idle_share: float = 0.85, timeout_s: float = 60.0) -> str:
    """Wait until the machine's CPUs were at least ``idle_share`` idle for a whole second
    (what the previous benchmark left behind, a JVM stopping, a removed index written
    back, is not billed to the next); says how long that took, and the idle share."""
    start = time.monotonic()
    idle = 0.0
    while time.monotonic() - start < timeout_s:
        before = _cpu_times()
        time.sleep(1.0)
        after = _cpu_times()
        total = sum(after) - sum(before)
        idle = (after[3] + after[4] - before[3] - before[4]) / total if total else 1.0
        if idle >= idle_share:
            break
    return f"waited {time.monotonic() - start:.0f} s for a quiet machine ({idle:.0%} idle)"


def _cpu_times() -> list[int]:
    """The machine's CPU time by kind (user, nice, system, idle, iowait, ...) in ticks."""
    with open("/proc/stat") as stat:
        return [int(field) for field in stat.readline().split()[1:]]
