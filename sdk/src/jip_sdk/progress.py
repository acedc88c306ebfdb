"""Progress reports as one JSON line on stdout.

Operators log to stdout (the contract), and every runner already captures stdout: the
subprocess runner reads the pipe, Kubernetes keeps pod logs. A progress report is
therefore a log line a runner can recognise without a side channel:
``{"jip_progress": 0.5, "series": "1.2.3", "message": "segmenting"}``.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from typing import TextIO

PROGRESS_KEY = "jip_progress"


@dataclass(frozen=True)
class Progress:
    """One progress report: a fraction in [0, 1], optionally for one series."""

    fraction: float
    series: str | None = None
    message: str | None = None


def format_progress(progress: Progress) -> str:
    """The JSON line for a report (without newline)."""
    record: dict[str, object] = {PROGRESS_KEY: round(progress.fraction, 4)}
    if progress.series is not None:
        record["series"] = progress.series
    if progress.message is not None:
        record["message"] = progress.message
    return json.dumps(record, separators=(", ", ": "))


def report_progress(
    fraction: float,
    *,
    series: str | None = None,
    message: str | None = None,
    stream: TextIO | None = None,
) -> None:
    """Write a progress line to stdout and flush, so the runner sees it at once."""
    if math.isnan(fraction):
        raise ValueError("progress fraction is NaN")
    out = sys.stdout if stream is None else stream
    clamped = min(max(fraction, 0.0), 1.0)
    out.write(format_progress(Progress(clamped, series, message)) + "\n")
    out.flush()


def parse_progress(line: str) -> Progress | None:
    """The report in one output line, or None for an ordinary log line (runner side)."""
    text = line.strip()
    if not text.startswith("{") or PROGRESS_KEY not in text:
        return None
    try:
        record = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(record, dict):
        return None
    value = record.get(PROGRESS_KEY)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    series = record.get("series")
    message = record.get("message")
    return Progress(
        fraction=min(max(float(value), 0.0), 1.0),
        series=series if isinstance(series, str) else None,
        message=message if isinstance(message, str) else None,
    )
