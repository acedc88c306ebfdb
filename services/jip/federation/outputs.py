"""What leaves a site for each declared output kind: its flat numeric payload, the schema
the disclosure checks hold it to, and the conversions from and back to the stats types.

One payload per declared output, keyed ``<group>:<key>`` (an output split by nothing has
the one group ``all``):

==================  =================================================================
kind                keys per group (role)
==================  =================================================================
count               n (count)
histogram           counts (count × bins), below, above (count)
sufficient_stats    n (count), mean, m2 (sum), mean_error, min, max (value; min and
                    max None when n = 0)
levene_round1       n (count), mean (sum), mean_error (value)
levene_round2       n (count), mean, m2 (sum), mean_error (value): the moments of
                    Z = |(x − centre) − centre error|
count_at_most       at_most, above (count × thresholds): #x ≤ t and #x > t
==================  =================================================================

Site side: :func:`release` computes the payload on the site's values and runs
:func:`~jip.federation.disclosure.check_output` with the per-record contributions of
every mean and sum (x for x̄, (x − x̄)² for M2). Requester side: the ``read_*`` functions turn a
released payload back into the stats types to combine.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numpy.typing import ArrayLike, NDArray

from jip.errors import Invalid
from jip.federation.disclosure import (
    Decision,
    DisclosurePolicy,
    FieldSpec,
    OutputSchema,
    Payload,
    Role,
    check_output,
)
from jip.federation.order import count_at_most
from jip.federation.protocol import DeclaredOutput, OutputKind
from jip.federation.stats import (
    Extremes,
    Histogram,
    Mean,
    Moments,
    Summary,
    finite_values,
    histogram,
    mean_of,
    summarize,
)

COUNT, SUM, VALUE = FieldSpec(Role.COUNT), FieldSpec(Role.SUM), FieldSpec(Role.VALUE)
NULLABLE = FieldSpec(Role.VALUE, nullable=True)


def _group_fields(output: DeclaredOutput, group: str) -> dict[str, FieldSpec]:
    kind = output.kind
    if kind is OutputKind.COUNT:
        return {"n": COUNT}
    if kind is OutputKind.HISTOGRAM:
        assert output.edges is not None
        bins = FieldSpec(Role.COUNT, length=len(output.edges) - 1)
        return {"counts": bins, "below": COUNT, "above": COUNT}
    if kind is OutputKind.SUFFICIENT_STATS:
        return {
            "n": COUNT,
            "mean": SUM,
            "mean_error": VALUE,
            "m2": SUM,
            "min": NULLABLE,
            "max": NULLABLE,
        }
    if kind is OutputKind.LEVENE_ROUND1:
        return {"n": COUNT, "mean": SUM, "mean_error": VALUE}
    if kind is OutputKind.LEVENE_ROUND2:
        return {"n": COUNT, "mean": SUM, "mean_error": VALUE, "m2": SUM}
    assert output.thresholds is not None
    cells = FieldSpec(Role.COUNT, length=len(output.thresholds[group]))
    return {"at_most": cells, "above": cells}


def schema_for(output: DeclaredOutput) -> OutputSchema:
    """The only keys and roles this output's payload may hold (see the module table)."""
    fields = {
        f"{group}:{key}": spec
        for group in output.group_labels
        for key, spec in _group_fields(output, group).items()
    }
    return OutputSchema(output.name, fields)


def _group_payload(
    output: DeclaredOutput, group: str, x: NDArray[np.float64]
) -> tuple[dict[str, object], dict[str, ArrayLike]]:
    """The payload of one group and the contributions of its sums."""
    kind, n = output.kind, int(x.size)
    if kind is OutputKind.COUNT:
        return {"n": n}, {}
    if kind is OutputKind.HISTOGRAM:
        assert output.edges is not None
        h = histogram(x, output.edges)
        return {"counts": list(h.counts), "below": h.below, "above": h.above}, {}
    if kind is OutputKind.COUNT_AT_MOST:
        assert output.thresholds is not None
        at_most = count_at_most(x, output.thresholds[group])
        return {"at_most": at_most, "above": [n - c for c in at_most]}, {}
    if kind is OutputKind.LEVENE_ROUND2:
        assert output.centres is not None
        value, error = output.centres[group]
        x = np.abs((x - value) - error)
    if kind is OutputKind.LEVENE_ROUND1:
        found = mean_of(x)
        return {"n": n, "mean": found.mean, "mean_error": found.error}, {"mean": x}
    summary = summarize(x)
    m = summary.moments
    payload: dict[str, object] = {"n": n, "mean": m.mean, "mean_error": m.mean_error, "m2": m.m2}
    contributions: dict[str, ArrayLike] = {"mean": x, "m2": (x - m.mean) ** 2}
    if kind is OutputKind.SUFFICIENT_STATS:
        payload["min"], payload["max"] = summary.extremes.minimum, summary.extremes.maximum
    return payload, contributions


def compute(
    output: DeclaredOutput, values: Mapping[str, ArrayLike]
) -> tuple[dict[str, object], dict[str, ArrayLike]]:
    """Site side: the payload of ``output`` on the site's values per group (a group the
    site has no values for counts as empty), and the per-record contributions of every
    sum, for the dominance rule. Values of undeclared groups are never read."""
    payload: dict[str, object] = {}
    contributions: dict[str, ArrayLike] = {}
    for group in output.group_labels:
        x = finite_values(values.get(group, ()), f"{output.name}:{group}")
        part, terms = _group_payload(output, group, x)
        payload.update({f"{group}:{key}": value for key, value in part.items()})
        contributions.update({f"{group}:{key}": value for key, value in terms.items()})
    return payload, contributions


def release(
    output: DeclaredOutput, values: Mapping[str, ArrayLike], policy: DisclosurePolicy
) -> Decision:
    """Site side: compute the output and run every per-output disclosure check on it."""
    payload, contributions = compute(output, values)
    return check_output(schema_for(output), payload, policy, contributions)


# -- requester side -----------------------------------------------------------------------
def _group(output: DeclaredOutput, payload: Payload, group: str, key: str) -> object:
    name = f"{group}:{key}"
    if name not in payload:
        raise Invalid(f"{output.name}.{name}: missing from a site's result")
    return payload[name]


def _int(output: DeclaredOutput, payload: Payload, group: str, key: str) -> int:
    value = _group(output, payload, group, key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise Invalid(f"{output.name}.{group}:{key}: expected a count")
    return value


def _float(output: DeclaredOutput, payload: Payload, group: str, key: str) -> float:
    value = _group(output, payload, group, key)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise Invalid(f"{output.name}.{group}:{key}: expected a number")
    return float(value)


def _counts(output: DeclaredOutput, payload: Payload, group: str, key: str) -> tuple[int, ...]:
    value = _group(output, payload, group, key)
    if not isinstance(value, list):
        raise Invalid(f"{output.name}.{group}:{key}: expected a list of counts")
    for i, c in enumerate(value):
        if c is None:
            raise Invalid(
                f"{output.name}.{group}:{key}[{i}]: suppressed at the site, so the pooled "
                "result cannot be exact"
            )
        if not isinstance(c, int) or isinstance(c, bool):
            raise Invalid(f"{output.name}.{group}:{key}[{i}]: expected a count")
    return tuple(value)


def read_counts(output: DeclaredOutput, payload: Payload) -> dict[str, int]:
    """A ``count`` payload: n per group."""
    return {g: _int(output, payload, g, "n") for g in output.group_labels}


def read_histograms(output: DeclaredOutput, payload: Payload) -> dict[str, Histogram]:
    """A ``histogram`` payload, per group, on the declared edges."""
    assert output.edges is not None
    return {
        g: Histogram(
            tuple(output.edges),
            _counts(output, payload, g, "counts"),
            _int(output, payload, g, "below"),
            _int(output, payload, g, "above"),
        )
        for g in output.group_labels
    }


def read_moments(output: DeclaredOutput, payload: Payload) -> dict[str, Moments]:
    """A ``sufficient_stats`` or ``levene_round2`` payload's (n, Σ, M2) per group."""
    return {
        g: Moments(
            _int(output, payload, g, "n"),
            _float(output, payload, g, "mean"),
            _float(output, payload, g, "m2"),
            _float(output, payload, g, "mean_error"),
        )
        for g in output.group_labels
    }


def read_summaries(output: DeclaredOutput, payload: Payload) -> dict[str, Summary]:
    """A ``sufficient_stats`` payload per group (extremes None where n = 0)."""
    found = {}
    for g, m in read_moments(output, payload).items():
        extremes = Extremes(None, None)
        if m.n:
            extremes = Extremes(
                _float(output, payload, g, "min"), _float(output, payload, g, "max")
            )
        found[g] = Summary(m, extremes)
    return found


def read_means(output: DeclaredOutput, payload: Payload) -> dict[str, Mean]:
    """A ``levene_round1`` payload: (n, x̄, e) per group."""
    return {
        g: Mean(
            _int(output, payload, g, "n"),
            _float(output, payload, g, "mean"),
            _float(output, payload, g, "mean_error"),
        )
        for g in output.group_labels
    }


def read_count_at_most(output: DeclaredOutput, payload: Payload) -> dict[str, list[int]]:
    """A ``count_at_most`` payload: per group, #x ≤ t for each declared threshold (the
    shape :func:`jip.federation.order.pool_counts` adds up)."""
    return {g: list(_counts(output, payload, g, "at_most")) for g in output.group_labels}
