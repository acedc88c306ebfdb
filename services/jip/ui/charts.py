"""Bar charts as SVG drawn on the server: no script, no CDN, readable without sight.

Every chart carries its values three times over: a ``<title>``/``<desc>`` pair that
screen readers announce for the whole picture (``role="img"``), a ``<title>`` per bar
(the tooltip), and the label and count as visible ``<text>``. Bars are horizontal so
that long labels (manufacturers) stay legible and ordered bins (ages, years) read top
to bottom.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

WIDTH = 380
ROW_HEIGHT = 18
TOP = 30  # room for the heading
LABEL_WIDTH = 136
COUNT_WIDTH = 48
MAX_LABEL = 17  # characters of a label drawn in full; the bar's title keeps all of it
MAX_BARS = 30


@dataclass(frozen=True)
class Bar:
    label: str
    value: int


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "chart"


def _short(label: str) -> str:
    return label if len(label) <= MAX_LABEL else label[: MAX_LABEL - 1] + "…"


def describe(title: str, bars: Sequence[Bar], unit: str) -> str:
    """The chart in words: ``Modality: CT 3 series, MR 2 series``."""
    if not bars:
        return f"{title}: no {unit}"
    return f"{title}: " + ", ".join(f"{b.label} {b.value} {unit}" for b in bars)


def bar_chart(title: str, bars: Sequence[Bar], *, unit: str = "series", note: str = "") -> str:
    """A standalone SVG document: one bar per entry, in the order given.

    ``note`` is said under the heading (e.g. why the chart is empty or partial).
    """
    shown = list(bars)[:MAX_BARS]
    ident = _slug(title)
    height = TOP + max(len(shown), 1) * ROW_HEIGHT + (ROW_HEIGHT if note else 0) + 6
    peak = max((b.value for b in shown), default=0) or 1
    span = WIDTH - LABEL_WIDTH - COUNT_WIDTH
    summary = describe(title, shown, unit) + (f" ({note})" if note else "")
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
        f'width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" '
        f'aria-labelledby="{ident}-title {ident}-desc" font-family="sans-serif" font-size="12">',
        f'<title id="{ident}-title">{escape(title)}</title>',
        f'<desc id="{ident}-desc">{escape(summary)}</desc>',
        f'<text x="0" y="16" font-weight="bold" font-size="13">{escape(title)}</text>',
    ]
    y = TOP
    if note:
        parts.append(f'<text x="0" y="{y + 12}" fill="#555">{escape(note)}</text>')
        y += ROW_HEIGHT
    if not shown:
        parts.append(f'<text x="0" y="{y + 12}" fill="#555">no {escape(unit)}</text>')
    for bar in shown:
        length = 0 if bar.value <= 0 else max(1, round(span * bar.value / peak))
        said = f"{bar.label}: {bar.value} {unit}"
        parts += [
            f'<g class="bar" data-label="{escape(bar.label)}" data-value="{bar.value}">',
            f"<title>{escape(said)}</title>",
            f'<text x="{LABEL_WIDTH - 6}" y="{y + 12}" text-anchor="end">'
            f"{escape(_short(bar.label))}</text>",
            f'<rect x="{LABEL_WIDTH}" y="{y + 2}" width="{length}" height="{ROW_HEIGHT - 4}" '
            'fill="#3b6ea8"/>',
            f'<text x="{LABEL_WIDTH + length + 4}" y="{y + 12}">{bar.value}</text>',
            "</g>",
        ]
        y += ROW_HEIGHT
    parts.append("</svg>")
    return "\n".join(parts)
