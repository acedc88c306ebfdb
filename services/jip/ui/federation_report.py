"""A federated study's report as HTML: who answered, per-site and pooled tables, a plot of
the per-site distributions, and Levene's tests.

It renders the dict of ``jip.federation.requester.job_report`` and nothing else, as pure
functions of it: the report is the researcher library's stable contract, so the page
shows exactly what it says, and the tests check the markup from a hand-made dict. Plots
are inline SVG drawn here (the pages' Content-Security-Policy allows no script or style
from elsewhere, and none is needed): histogram bars per site as the share of each
site's values in each bin, or the mean ± one standard deviation per site per group.
Every value is escaped; numbers that are missing or not finite show as a dash.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from itertools import pairwise
from typing import Any

from markupsafe import Markup

PALETTE = ("#1f5fbf", "#d9480f", "#2b8a3e", "#862e9c", "#c2255c", "#0b7285", "#5c940d", "#495057")
POOLED = "pooled"
DASH = "—"
WIDTH = 640
LEFT, RIGHT, TOP = 56, 16, 12
STATS_COLUMNS = ("n", "mean", "sd", "variance", "min", "max")
CENTRES = {"mean": "Levene (mean)", "median": "Brown–Forsythe (median)"}


# -- numbers -----------------------------------------------------------------------------
def number(value: Any, digits: int = 4) -> str:
    """``value`` for a table cell: integers whole, others to ``digits`` significant
    digits; None, NaN, infinities and non-numbers as a dash."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return DASH
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return DASH
    return f"{value:.{digits}g}"


def numbers(value: Any, digits: int = 4) -> str:
    """A number, a list of them, or a mapping of labels to them (n per group)."""
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {number(v, digits)}" for k, v in sorted(value.items()))
    if isinstance(value, list | tuple):
        return ", ".join(number(v, digits) for v in value)
    return number(value, digits)


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def standard_deviation(stats: Mapping[str, Any]) -> float | None:
    variance = _finite(stats.get("variance"))
    return math.sqrt(variance) if variance is not None and variance >= 0 else None


def colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


# -- the whole report --------------------------------------------------------------------
def report_html(report: Mapping[str, Any]) -> Markup:
    """The report's body: sites, then each output (tables and plot), then Levene's tests."""
    sites = site_ids(report)
    parts = [sites_table(report)]
    for name, output in sorted(dict(report.get("outputs") or {}).items()):
        parts.append(output_section(str(name), output, sites))
    parts.append(levene_table(report.get("levene") or []))
    return Markup("\n").join(parts)


def site_ids(report: Mapping[str, Any]) -> list[str]:
    """Every site the report names, in a stable order (for colours that stay put)."""
    names = set(report.get("state") or {}) | set(report.get("sites_answered") or [])
    names |= {str(m.get("site")) for m in report.get("sites_missing") or []}
    for output in (report.get("outputs") or {}).values():
        for group in (output.get("groups") or {}).values():
            names |= set(group.get("sites") or {})
    return sorted(str(n) for n in names)


def site_state(value: Any) -> tuple[str, str]:
    """(state, reason) of one site: the report gives ``{"state", "reason"}`` or the state."""
    if isinstance(value, Mapping):
        return str(value.get("state") or ""), str(value.get("reason") or "")
    return str(value or ""), ""


def sites_table(report: Mapping[str, Any]) -> Markup:
    answered = set(report.get("sites_answered") or [])
    missing = {str(m.get("site")): m for m in report.get("sites_missing") or []}
    states = dict(report.get("state") or {})
    rows = []
    for site in site_ids(report):
        gone = missing.get(site, {})
        state, reason = site_state(states.get(site))
        state, reason = (
            state or str(gone.get("state") or ""),
            reason or str(gone.get("reason") or ""),
        )
        rows.append(
            Markup(
                '<tr data-site="{0}"><td>{0}</td><td><span class="state state-{1}">{1}</span>'
                "</td><td>{2}</td><td>{3}</td></tr>"
            ).format(site, state, "yes" if site in answered else "no", reason)
        )
    if not rows:
        rows.append(Markup('<tr><td colspan="4" class="empty">No site has answered yet.</td></tr>'))
    reached = "reached" if report.get("k_reached") else "not reached"
    return Markup(
        '<h2>Sites</h2><p class="meta k-reached">k = {0}: {1} ({2} answered)</p>'
        '<table class="list fed-sites"><thead><tr><th>Site</th><th>State</th><th>Answered</th>'
        "<th>Why not</th></tr></thead><tbody>{3}</tbody></table>"
    ).format(report.get("k", DASH), reached, len(answered), Markup("").join(rows))


# -- one output --------------------------------------------------------------------------
def output_section(name: str, output: Mapping[str, Any], sites: Sequence[str]) -> Markup:
    kind = str(output.get("kind", ""))
    groups: dict[str, Mapping[str, Any]] = dict(output.get("groups") or {})
    tables = [stats_table(kind, group, groups[group]) for group in sorted(groups)]
    if kind == "histogram":
        plots = [histogram_svg(name, group, groups[group], sites) for group in sorted(groups)]
    elif kind == "sufficient_stats":
        plots = [means_svg(name, groups, sites)]
    else:
        plots = []
    return Markup(
        '<section class="fed-output" data-output="{0}"><h2>{0} <span class="meta">{1} of {2}'
        '</span></h2>{3}<div class="fed-plots">{4}</div></section>'
    ).format(name, kind, output.get("field", ""), Markup("").join(tables), Markup("").join(plots))


def stats_table(kind: str, group: str, values: Mapping[str, Any]) -> Markup:
    """Per-site rows and the pooled row of one group, columns by the output's kind."""
    per_site: Mapping[str, Mapping[str, Any]] = values.get("sites") or {}
    rows = [(site, per_site[site]) for site in sorted(per_site)]
    if values.get("pooled") is not None:
        rows.append((POOLED, values["pooled"]))
    header = _header(kind, rows)
    body = [
        Markup('<tr class="{0}" data-site="{1}"><th scope="row">{1}</th>{2}</tr>').format(
            "pooled" if site == POOLED else "site", site, _cells(kind, stats)
        )
        for site, stats in rows
    ]
    return Markup(
        '<table class="list fed-stats" data-group="{0}"><caption>group {0}</caption>'
        "<thead><tr><th>Site</th>{1}</tr></thead><tbody>{2}</tbody></table>{3}"
    ).format(group, header, Markup("").join(body), quantiles_note(values.get("pooled") or {}))


def quantiles_note(pooled: Mapping[str, Any]) -> Markup:
    """The pooled histogram's quantiles, which are estimates from the bins and say so."""
    quantiles: Mapping[str, Mapping[str, Any]] = pooled.get("quantiles") or {}
    if not quantiles:
        return Markup("")
    parts = [
        f"{q}: {number(e.get('estimate'))} (between {number(e.get('lower'))} and "
        f"{number(e.get('upper'))})"
        for q, e in sorted(quantiles.items())
    ]
    return Markup(
        '<p class="meta quantiles">Pooled quantiles, approximate (from the bins): {}</p>'
    ).format("; ".join(parts))


def _header(kind: str, rows: Sequence[tuple[str, Mapping[str, Any]]]) -> Markup:
    if kind == "sufficient_stats":
        names: Iterable[str] = STATS_COLUMNS
    elif kind == "count":
        names = ("n",)
    elif kind == "histogram":
        edges = next((list(s.get("edges") or []) for _, s in rows if s.get("edges")), [])
        names = ["n", "below", *_bin_labels(edges), "above"]
    else:
        names = ("values",)
    return Markup("").join(Markup("<th>{}</th>").format(n) for n in names)


def _cells(kind: str, stats: Mapping[str, Any]) -> Markup:
    if kind == "sufficient_stats":
        shown = {**stats, "sd": standard_deviation(stats)}
        values = [number(shown.get(column)) for column in STATS_COLUMNS]
    elif kind == "count":
        values = [number(stats.get("n"))]
    elif kind == "histogram":
        counts = list(stats.get("counts") or [])
        below, above = stats.get("below", 0), stats.get("above", 0)
        total = stats.get("n")
        if total is None:
            total = sum(c for c in [*counts, below, above] if _finite(c) is not None)
        values = [number(total), number(below), *map(number, counts), number(above)]
    else:
        values = [", ".join(f"{k}={v}" for k, v in sorted(stats.items()))]
    return Markup("").join(Markup('<td class="num">{}</td>').format(v) for v in values)


def _bin_labels(edges: Sequence[Any]) -> list[str]:
    return [f"[{number(a)}, {number(b)})" for a, b in pairwise(edges)]


# -- plots -------------------------------------------------------------------------------
def _svg(label: str, height: int, body: Iterable[Markup]) -> Markup:
    return Markup(
        '<svg class="fed-plot" xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{0}" '
        'viewBox="0 0 {1} {2}" width="{1}" height="{2}" font-size="11" '
        'font-family="system-ui, sans-serif"><title>{0}</title>{3}</svg>'
    ).format(label, WIDTH, height, Markup("").join(body))


def _text(x: float, y: float, text: str, anchor: str = "middle") -> Markup:
    return Markup('<text x="{:.1f}" y="{:.1f}" text-anchor="{}" fill="#1d2330">{}</text>').format(
        x, y, anchor, text
    )


def _legend(sites: Sequence[str], y: float) -> list[Markup]:
    marks, x = [], float(LEFT)
    for index, site in enumerate(sites):
        marks.append(
            Markup('<rect x="{:.1f}" y="{:.1f}" width="10" height="10" fill="{}"/>').format(
                x, y - 9, colour(index)
            )
        )
        marks.append(_text(x + 14, y, site, "start"))
        x += 24 + 7 * len(site)
    return marks


def histogram_svg(
    name: str, group: str, values: Mapping[str, Any], sites: Sequence[str] = ()
) -> Markup:
    """Bars per bin and site: each site's share of its values in range that fall in the bin,
    so sites of different sizes compare; the count is in each bar's tooltip."""
    per_site: Mapping[str, Mapping[str, Any]] = values.get("sites") or {}
    order = [s for s in sites if s in per_site] + sorted(set(per_site) - set(sites))
    edges = next((list(per_site[s].get("edges") or []) for s in order), [])
    bins = max(len(edges) - 1, 1)
    plot_h, bottom = 160, TOP + 160
    slot = (WIDTH - LEFT - RIGHT) / bins
    bar = slot * 0.8 / max(len(order), 1)
    marks = [
        Markup('<line x1="{0}" y1="{1}" x2="{2}" y2="{1}" stroke="#667085"/>').format(
            LEFT, bottom, WIDTH - RIGHT
        ),
        _text(LEFT - 6, TOP + 4, "100%", "end"),
        _text(LEFT - 6, bottom, "0", "end"),
    ]
    labels = _bin_labels(edges)
    for index, edge in enumerate(edges):
        marks.append(_text(LEFT + index * slot, bottom + 14, number(edge)))
    for s_index, site in enumerate(order):
        counts = [c if _finite(c) is not None else 0 for c in per_site[site].get("counts") or []]
        total = sum(counts)
        for b_index, count in enumerate(counts[:bins]):
            share = count / total if total else 0.0
            height = share * plot_h
            x = LEFT + b_index * slot + slot * 0.1 + s_index * bar
            marks.append(
                Markup(
                    '<rect class="bar" data-site="{0}" data-bin="{1}" data-count="{2}" '
                    'x="{3:.1f}" y="{4:.1f}" width="{5:.1f}" height="{6:.1f}" fill="{7}">'
                    "<title>{0}, bin {8}: {2} ({9:.0%})</title></rect>"
                ).format(
                    site,
                    b_index,
                    number(count),
                    x,
                    bottom - height,
                    bar,
                    height,
                    colour(_index(sites, site, s_index)),
                    labels[b_index] if b_index < len(labels) else b_index,
                    share,
                )
            )
    legend = _legend(order, bottom + 34)
    label = f"{name}, group {group}: share of each site's values per bin"
    return _svg(label, bottom + 44, [*marks, *legend])


def _index(sites: Sequence[str], site: str, fallback: int) -> int:
    return list(sites).index(site) if site in sites else fallback


def means_svg(
    name: str, groups: Mapping[str, Mapping[str, Any]], sites: Sequence[str] = ()
) -> Markup:
    """A row per group and site (and the pooled row): the mean as a dot, ± one standard
    deviation as a line; a site without a finite mean gets a row that says so."""
    rows: list[tuple[str, str, Mapping[str, Any]]] = []
    for group in sorted(groups):
        per_site: Mapping[str, Mapping[str, Any]] = groups[group].get("sites") or {}
        rows += [(group, site, per_site[site]) for site in sorted(per_site)]
        if groups[group].get("pooled") is not None:
            rows.append((group, POOLED, groups[group]["pooled"]))
    spans = [_span(stats) for _, _, stats in rows]
    ends = [v for span in spans if span is not None for v in span]
    lo, hi = (min(ends), max(ends)) if ends else (0.0, 1.0)
    if hi == lo:
        lo, hi = lo - 1, hi + 1
    left, row_h = LEFT + 104, 18
    scale = (WIDTH - left - RIGHT) / (hi - lo)
    bottom = TOP + row_h * len(rows)
    marks = [
        Markup('<line x1="{0}" y1="{1}" x2="{2}" y2="{1}" stroke="#667085"/>').format(
            left, bottom, WIDTH - RIGHT
        )
    ]
    for tick in range(5):
        value = lo + (hi - lo) * tick / 4
        marks.append(_text(left + (value - lo) * scale, bottom + 14, number(value, 3)))
    for index, ((group, site, stats), span) in enumerate(zip(rows, spans, strict=True)):
        y = TOP + row_h * index + row_h / 2
        marks.append(_text(left - 6, y + 4, f"{group} · {site}", "end"))
        if span is None:
            marks.append(_text(left + 4, y + 4, "no mean", "start"))
            continue
        mean = float(stats["mean"])
        fill = "#1d2330" if site == POOLED else colour(_index(sites, site, index))
        marks.append(
            Markup(
                '<g class="mean" data-group="{0}" data-site="{1}" data-mean="{2}">'
                '<line x1="{3:.1f}" y1="{5:.1f}" x2="{4:.1f}" y2="{5:.1f}" stroke="{6}" '
                'stroke-width="2"/><circle cx="{7:.1f}" cy="{5:.1f}" r="{8}" fill="{6}"/>'
                "<title>{0} · {1}: mean {2}, sd {9}, n {10}</title></g>"
            ).format(
                group,
                site,
                number(mean),
                left + (span[0] - lo) * scale,
                left + (span[1] - lo) * scale,
                y,
                fill,
                left + (mean - lo) * scale,
                5 if site == POOLED else 4,
                number(standard_deviation(stats)),
                number(stats.get("n")),
            )
        )
    label = f"{name}: mean ± one standard deviation per site and group"
    return _svg(label, bottom + 24, marks)


def _span(stats: Mapping[str, Any]) -> tuple[float, float] | None:
    mean = _finite(stats.get("mean"))
    if mean is None:
        return None
    sd = standard_deviation(stats) or 0.0
    return mean - sd, mean + sd


# -- Levene ------------------------------------------------------------------------------
def levene_table(tests: Sequence[Mapping[str, Any]]) -> Markup:
    if not tests:
        return Markup("")
    rows = [
        Markup(
            '<tr data-test="{0}"><td>{0}</td><td>{1}</td><td>{2}</td><td class="num">{3}</td>'
            '<td class="num">{4}</td><td class="num">{5}</td><td class="num">{6}</td>'
            "<td>{7}</td><td>{8}</td></tr>"
        ).format(
            test.get("name", ""),
            ", ".join(map(str, test.get("groups") or [])),
            CENTRES.get(str(test.get("center")), str(test.get("center", ""))),
            number(test.get("W")),
            numbers(test.get("df")),
            number(test.get("p"), 3),
            numbers(test.get("n")),
            ", ".join(map(str, test.get("sites") or [])),
            test.get("error") or "",
        )
        for test in tests
    ]
    return Markup(
        '<h2>Equal variances</h2><table class="list fed-levene"><thead><tr><th>Test</th>'
        "<th>Groups</th><th>Centre</th><th>W</th><th>df</th><th>p</th><th>n</th><th>Sites</th>"
        "<th>Note</th></tr></thead><tbody>{}</tbody></table>"
    ).format(Markup("").join(rows))
