"""Aggregations and sort in the cohort language: the rest of a search request.

:func:`parse_aggs` and :func:`parse_sort` read them as :func:`jip.meta.query.parse_query`
reads a query, into typed values that both index adapters take, with an
:class:`Invalid` naming the path at fault (``aggs.by_age.range.ranges[2].from``).

Aggregations: ``terms`` (size), ``range`` (ranges of key/from/to), ``date_histogram``
(calendar_interval year, month, day) and ``cardinality``. Sort: field names, ascending
or descending, with ``SeriesInstanceUID`` appended so that pages are stable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from jip.errors import Invalid
from jip.meta.fields import ID_FIELD, Field, FieldType, Scalar, lookup
from jip.meta.limits import DEFAULT_LIMITS, QueryLimits
from jip.meta.query import (
    a_noun,
    as_number,
    field_of,
    options,
    single_key,
)

MAX_BUCKETS = 10000
MAX_RANGES = 60  # a range facet with more buckets is a histogram
MAX_NAME = 256  # characters of an aggregation's name


@dataclass(frozen=True)
class TermsAgg:
    field: Field
    size: int = 10
    # Only these values count (None: every value); set by META, never read from a request:
    # a caller's facet on Projects counts the caller's projects alone.
    include: tuple[Scalar, ...] | None = None


@dataclass(frozen=True)
class RangeSpec:
    key: str
    start: float | None  # "from", inclusive
    end: float | None  # "to", exclusive


@dataclass(frozen=True)
class RangeAgg:
    field: Field
    ranges: tuple[RangeSpec, ...]


@dataclass(frozen=True)
class DateHistogramAgg:
    field: Field
    interval: Literal["year", "month", "day"]


@dataclass(frozen=True)
class CardinalityAgg:
    field: Field
    include: tuple[Scalar, ...] | None = None  # as TermsAgg.include


Agg = TermsAgg | RangeAgg | DateHistogramAgg | CardinalityAgg


@dataclass(frozen=True)
class SortKey:
    field: Field
    descending: bool = False


# --- reading ------------------------------------------------------------------------


def parse_aggs(
    dsl: object, path: str = "aggs", limits: QueryLimits = DEFAULT_LIMITS
) -> dict[str, Agg]:
    """Named aggregations, at most ``limits.max_aggregations`` of them; sub-aggregations
    are not part of the language."""
    if dsl is None:
        return {}
    if not isinstance(dsl, Mapping):
        raise Invalid(f"{path}: expected an object of named aggregations, got {dsl!r}")
    if len(dsl) > limits.max_aggregations:
        raise Invalid(
            f"{path}: at most {limits.max_aggregations} aggregations in one request, got "
            f"{len(dsl)} (setting meta.max_aggregations)"
        )
    out: dict[str, Agg] = {}
    for name, body in dsl.items():
        if (
            not isinstance(name, str)
            or not name
            or "[" in name
            or ">" in name
            or len(name) > MAX_NAME
        ):
            raise Invalid(f"{path}: bad aggregation name {name!r}")
        kind, spec = single_key(body, f"{path}.{name}", "an aggregation type")
        where = f"{path}.{name}.{kind}"
        if kind == "terms":
            opts = options(spec, where, {"field", "size"}, "field")
            size = _int(opts.get("size", 10), f"{where}.size", 1, MAX_BUCKETS)
            out[name] = TermsAgg(field_of(opts["field"], where, exact=True), size)
        elif kind == "range":
            out[name] = _range_agg(spec, where)
        elif kind == "date_histogram":
            opts = options(spec, where, {"field", "calendar_interval"}, "field")
            field = _typed_field(opts["field"], where, (FieldType.DATE,))
            raw = opts.get("calendar_interval")
            interval = _INTERVALS.get(raw) if isinstance(raw, str) else None
            if interval is None:
                raise Invalid(
                    f"{where}.calendar_interval: expected year, month or day, got {raw!r}"
                )
            out[name] = DateHistogramAgg(field, interval)
        elif kind == "cardinality":
            opts = options(spec, where, {"field"}, "field")
            out[name] = CardinalityAgg(field_of(opts["field"], where, exact=True))
        else:
            raise Invalid(
                f"{path}.{name}: unknown aggregation {kind!r} "
                "(known: terms, range, date_histogram, cardinality)"
            )
    return out


_INTERVALS: dict[str, Literal["year", "month", "day"]] = {
    "year": "year",
    "1y": "year",
    "month": "month",
    "1M": "month",
    "day": "day",
    "1d": "day",
}


def _range_agg(spec: object, where: str) -> RangeAgg:
    opts = options(spec, where, {"field", "ranges"}, "field")
    field = _typed_field(opts["field"], where, (FieldType.INTEGER, FieldType.FLOAT))
    raw = opts.get("ranges")
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_RANGES:
        raise Invalid(
            f"{where}.ranges: expected a list of 1 to {MAX_RANGES} ranges "
            "(date_histogram suits more buckets)"
        )
    ranges = []
    for i, item in enumerate(raw):
        at = f"{where}.ranges[{i}]"
        bounds = options(item, at, {"key", "from", "to"})
        start, end = (as_number(bounds.get(k), f"{at}.{k}") for k in ("from", "to"))
        key = bounds.get("key")
        if key is not None and not isinstance(key, str):
            raise Invalid(f"{at}.key: expected a string, got {key!r}")
        ranges.append(RangeSpec(key or range_key(start, end), start, end))
    return RangeAgg(field, tuple(ranges))


def range_key(start: float | None, end: float | None) -> str:
    """OpenSearch's default bucket key, ``10.0-20.0`` or ``*-10.0``."""
    return f"{'*' if start is None else repr(start)}-{'*' if end is None else repr(end)}"


def parse_sort(dsl: object, path: str = "sort") -> tuple[SortKey, ...]:
    """``"Field"``, ``{"Field": "desc"}``, ``{"Field": {"order": "desc"}}`` or a list of
    them; ``SeriesInstanceUID`` ascending is appended so that pages are stable. No sort
    (an empty tuple) leaves the order to the index: the order series were indexed in
    SQLite, relevance then index order in OpenSearch."""
    items = [] if dsl is None else dsl if isinstance(dsl, list) else [dsl]
    keys: list[SortKey] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        at = f"{path}[{i}]"
        if isinstance(item, str):
            name, order = item, "asc"
        else:
            name, spec = single_key(item, at, "a field")
            order = (
                spec
                if isinstance(spec, str)
                else options(spec, f"{at}.{name}", {"order"}, "order")["order"]
            )
        field = field_of(name, at, exact=True)
        if field.multi:
            raise Invalid(f"{at}: cannot sort on the multi-valued field {name!r}")
        if order not in ("asc", "desc"):
            raise Invalid(f"{at}.{name}: order must be 'asc' or 'desc', got {order!r}")
        if field.stored not in seen:  # a field sorted on again changes nothing
            seen.add(field.stored)
            keys.append(SortKey(field, order == "desc"))
    if keys and not any(k.field.name == ID_FIELD for k in keys):
        keys.append(SortKey(lookup(ID_FIELD)))
    return tuple(keys)


def _typed_field(name: object, path: str, types: tuple[FieldType, ...]) -> Field:
    field = lookup(name, f"{path}.field")
    if field.type not in types:
        raise Invalid(
            f"{path}.field: needs {a_noun(' or '.join(types))} field; {field.name!r} is {field.type}"
        )
    return field


def _int(raw: object, path: str, low: int, high: int) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or not low <= raw <= high:
        raise Invalid(f"{path}: expected an integer from {low} to {high}, got {raw!r}")
    return raw
