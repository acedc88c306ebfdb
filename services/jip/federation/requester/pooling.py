"""Opening the sites' sealed results and pooling them, exactly.

Each site's result is opened with the researcher's private key
(:func:`~jip.federation.protocol.open_result`, which also checks that the plaintext
belongs to this job, site and round), its payloads read back into the stats types
(:mod:`jip.federation.outputs`) and combined with the ``combine_*`` functions, so the
pooled numbers equal the computation on the pooled values (Chan's update for the
variance, added counts for histograms). Only histograms' quantiles are estimates, and
they say ``"approximate": true``.

Every number is JSON: a variance with n ≤ 1 (NaN) or an absent extreme is ``None``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from jip.errors import Invalid
from jip.federation.outputs import read_counts, read_histograms, read_means, read_summaries
from jip.federation.protocol import DeclaredOutput, OutputKind, SiteResult, open_result
from jip.federation.stats import (
    Histogram,
    Mean,
    Summary,
    approximate_quantile,
    combine_histograms,
    combine_means,
    combine_summaries,
)

Payloads = dict[str, dict[str, Any]]
"""Per site, the opened outputs of one round (output name → payload)."""
Reader = Callable[[DeclaredOutput, Any], Mapping[str, Any]]
QUANTILES = (0.25, 0.5, 0.75)
POOLED_KINDS = (
    OutputKind.COUNT,
    OutputKind.HISTOGRAM,
    OutputKind.SUFFICIENT_STATS,
    OutputKind.LEVENE_ROUND1,
)


def open_all(results: Iterable[SiteResult], private_key: bytes) -> Payloads:
    """Per site, its opened outputs; Forbidden when a result was not sealed to this key."""
    return {result.site_id: open_result(result, private_key) for result in results}


def _number(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else value


def summary_stats(summary: Summary) -> dict[str, Any]:
    """n, mean, variance (ddof=1), min, max of one site or the pool."""
    m = summary.moments
    return {
        "n": m.n,
        "mean": m.mean if m.n else None,
        "variance": _number(m.variance(ddof=1)),
        "min": summary.extremes.minimum,
        "max": summary.extremes.maximum,
    }


def histogram_stats(h: Histogram, *, quantiles: bool) -> dict[str, Any]:
    """Counts on the declared edges; the pooled one adds quantile estimates."""
    found: dict[str, Any] = {
        "n": h.n,
        "edges": list(h.edges),
        "counts": list(h.counts),
        "below": h.below,
        "above": h.above,
    }
    if quantiles and h.n:
        found["quantiles"] = {}
        for q in QUANTILES:
            estimate = approximate_quantile(h, q)
            found["quantiles"][f"{q:g}"] = {
                "estimate": estimate.estimate,
                "lower": estimate.lower,
                "upper": estimate.upper,
                "approximate": estimate.approximate,
            }
    return found


def mean_stats(mean: Mean) -> dict[str, Any]:
    return {"n": mean.n, "mean": mean.mean if mean.n else None}


def _per_group(output: DeclaredOutput, payloads: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Per group, each site's typed part and their pool."""
    kind = output.kind
    readers: dict[OutputKind, Reader] = {
        OutputKind.COUNT: read_counts,
        OutputKind.HISTOGRAM: read_histograms,
        OutputKind.SUFFICIENT_STATS: read_summaries,
        OutputKind.LEVENE_ROUND1: read_means,
    }
    if kind not in readers:
        raise Invalid(f"{output.name}: a {kind.value} output is not pooled on its own")
    parts = {site: readers[kind](output, p) for site, p in payloads.items()}
    groups: dict[str, Any] = {}
    for group in output.group_labels:
        by_site = {site: part[group] for site, part in parts.items()}
        groups[group] = {"sites": by_site, "pooled": _pool(kind, list(by_site.values()))}
    return groups


def _pool(kind: OutputKind, parts: list[Any]) -> Any:
    if kind is OutputKind.COUNT:
        return sum(parts)
    if kind is OutputKind.HISTOGRAM:
        return combine_histograms(parts) if parts else None
    if kind is OutputKind.SUFFICIENT_STATS:
        return combine_summaries(parts)
    return combine_means(parts)


def _stats(kind: OutputKind, value: Any, *, pooled: bool) -> dict[str, Any] | None:
    if value is None:
        return None
    if kind is OutputKind.COUNT:
        return {"n": value}
    if kind is OutputKind.HISTOGRAM:
        return histogram_stats(value, quantiles=pooled)
    if kind is OutputKind.SUFFICIENT_STATS:
        return summary_stats(value)
    return mean_stats(value)


def pool_output(output: DeclaredOutput, payloads: Payloads) -> dict[str, Any]:
    """One output of round 1 across the sites that released it:
    ``{"kind", "field", "groups": {group: {"sites": {site: stats}, "pooled": stats}}}``."""
    released = {site: p[output.name] for site, p in sorted(payloads.items()) if output.name in p}
    groups = _per_group(output, released)
    return {
        "kind": output.kind.value,
        "field": output.field,
        "groups": {
            group: {
                "sites": {
                    site: _stats(output.kind, part, pooled=False)
                    for site, part in found["sites"].items()
                },
                "pooled": _stats(output.kind, found["pooled"], pooled=True),
            }
            for group, found in groups.items()
        },
    }


def pooled_summaries(output: DeclaredOutput, payloads: Payloads) -> dict[str, Summary]:
    """Per group, the pooled summary of a ``sufficient_stats`` output (the extremes a
    median search is bracketed by)."""
    released = {site: p[output.name] for site, p in payloads.items() if output.name in p}
    groups = _per_group(output, released)
    return {group: found["pooled"] for group, found in groups.items()}
