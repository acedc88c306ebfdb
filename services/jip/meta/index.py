"""The metadata index port: what cohort search needs from SQLite or OpenSearch.

Both adapters take queries, aggregations and sorts already parsed (trees from
:func:`jip.meta.query.parse_query`, :func:`jip.meta.aggs.parse_aggs` and
:func:`jip.meta.aggs.parse_sort`: the caller parses once, at the edge, so that errors
name the caller's own input), check pages and fields the same way, and answer in the
same shapes, which are OpenSearch's with the fields that mean nothing here left out:

- ``terms``: ``{"buckets": [{"key", "doc_count"}], "sum_other_doc_count",
  "doc_count_error_upper_bound"}``, most documents first, ties by key; a boolean key is
  ``True``/``False``, a date key ``yyyy-MM-dd``.
- ``range``: ``{"buckets": [{"key", "from"?, "to"?, "doc_count"}]}`` in the order asked,
  ``from`` inclusive and ``to`` exclusive.
- ``date_histogram``: ``{"buckets": [{"key_as_string": "yyyy-MM-dd", "key": epoch ms,
  "doc_count"}]}`` from the first to the last non-empty bucket, empty ones included.
- ``cardinality``: ``{"value": n}``.

A document missing the field counts in no bucket; a multi-valued one counts once in
every bucket one of its values falls in.

Hits come in the order asked (missing values last, ties by SeriesInstanceUID); with no
sort, in the index's own order (SQLite: the order series were indexed; OpenSearch:
relevance, then its own). ``search(..., aggs=...)`` answers a whole search page (hits,
total, facets) in one call, as one OpenSearch request does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Literal, Protocol

from jip.errors import Invalid
from jip.meta.aggs import Agg, CardinalityAgg, DateHistogramAgg, RangeAgg, SortKey, TermsAgg
from jip.meta.fields import FIELDS, ID_FIELD, FieldType
from jip.meta.query import MATCH_ALL, Query

MAX_RESULT_WINDOW = 10000  # OpenSearch's index.max_result_window


@dataclass(frozen=True)
class SearchResult:
    total: int
    hits: list[dict[str, Any]] = field(default_factory=list)
    aggregations: dict[str, Any] = field(default_factory=dict)


class MetaIndex(Protocol):
    """Series documents (flat dicts, :mod:`jip.meta.fields`) keyed by SeriesInstanceUID."""

    def upsert(self, docs: Iterable[Mapping[str, Any]]) -> int:
        """Insert or replace documents; returns how many were written."""
        ...

    def delete(self, series_uids: Iterable[str]) -> int:
        """Remove documents; returns how many existed."""
        ...

    def search(
        self,
        query: Query = MATCH_ALL,
        sort: Sequence[SortKey] = (),
        offset: int = 0,
        limit: int = 20,
        fields: Sequence[str] | None = None,
        aggs: Mapping[str, Agg] | None = None,
    ) -> SearchResult:
        """A page of the matching documents (only ``fields`` of them, when given), their
        total and, when ``aggs`` are given, the aggregations over all of them: what a
        search page shows, in one call (and one OpenSearch request)."""
        ...

    def aggregate(self, query: Query, aggs: Mapping[str, Agg]) -> dict[str, Any]:
        """Named aggregation results over the documents ``query`` matches."""
        ...

    def field_values(self, field: str, size: int = 100) -> list[dict[str, Any]]:
        """The ``size`` most frequent values of ``field`` over all documents."""
        ...

    def count(self) -> int: ...

    def clear(self) -> None: ...

    def close(self) -> None: ...


def check_page(offset: int, limit: int) -> None:
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise Invalid(f"offset: expected an integer >= 0, got {offset!r}")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise Invalid(f"limit: expected an integer >= 0, got {limit!r}")
    if offset + limit > MAX_RESULT_WINDOW:
        raise Invalid(
            f"offset + limit must be at most {MAX_RESULT_WINDOW}; "
            "narrow the query or sort and page by a field instead"
        )


def check_fields(fields: Sequence[str] | None) -> list[str] | None:
    """Stored field names to return (SeriesInstanceUID always); None means all."""
    if fields is None:
        return None
    if isinstance(fields, str):
        raise Invalid("fields: expected a list of field names")
    unknown = [f for f in fields if f not in FIELDS]
    if unknown:
        raise Invalid(f"fields: unknown field {unknown[0]!r}")
    return list(dict.fromkeys([ID_FIELD, *fields]))


def project(doc: Mapping[str, Any], fields: list[str] | None) -> dict[str, Any]:
    if fields is None:
        return dict(doc)
    return {f: doc[f] for f in fields if f in doc}


def terms_result(top: list[tuple[Any, int]], total: int, boolean: bool = False) -> dict[str, Any]:
    """``top``: (key, count) ordered; ``total``: value occurrences over all buckets."""
    buckets = [{"key": bool(k) if boolean else k, "doc_count": n} for k, n in top]
    return {
        "doc_count_error_upper_bound": 0,
        "sum_other_doc_count": total - sum(n for _, n in top),
        "buckets": buckets,
    }


def range_bucket(key: str, start: float | None, end: float | None, count: int) -> dict[str, Any]:
    bucket: dict[str, Any] = {"key": key}
    if start is not None:
        bucket["from"] = float(start)
    if end is not None:
        bucket["to"] = float(end)
    bucket["doc_count"] = count
    return bucket


def histogram_result(
    counts: Mapping[str, int], interval: Literal["year", "month", "day"]
) -> dict[str, Any]:
    """Buckets from bucket starts (``yyyy-MM-dd``) to counts, gaps filled with zeros."""
    if not counts:
        return {"buckets": []}
    first, last = date.fromisoformat(min(counts)), date.fromisoformat(max(counts))
    buckets = []
    current = first
    while current <= last:
        text = current.isoformat()
        buckets.append(
            {"key_as_string": text, "key": epoch_ms(text), "doc_count": counts.get(text, 0)}
        )
        current = _next_bucket(current, interval)
    return {"buckets": buckets}


def bucket_start(day: str, interval: Literal["year", "month", "day"]) -> str:
    if interval == "year":
        return f"{day[:4]}-01-01"
    if interval == "month":
        return f"{day[:7]}-01"
    return day


def epoch_ms(day: str) -> int:
    start = datetime.fromisoformat(day).replace(tzinfo=UTC)
    return int(start.timestamp()) * 1000


def day_of_epoch_ms(millis: int) -> str:
    return datetime.fromtimestamp(millis / 1000, tz=UTC).date().isoformat()


def _next_bucket(current: date, interval: Literal["year", "month", "day"]) -> date:
    if interval == "year":
        return current.replace(year=current.year + 1)
    if interval == "month":
        carry, month = divmod(current.month, 12)
        return date(current.year + carry, month + 1, 1)
    return date.fromordinal(current.toordinal() + 1)


def agg_result(agg: Agg, counts: Mapping[Any, int]) -> dict[str, Any]:
    """An aggregation's answer from the number of documents per key: a value (terms,
    cardinality), a date (date_histogram, bucketed here) or a bit mask of the ranges the
    value falls in (range)."""
    include = getattr(agg, "include", None)
    if include is not None:
        counts = {key: n for key, n in counts.items() if key in include}
    match agg:
        case TermsAgg(field, size):
            ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
            return terms_result(
                ordered[:size], sum(counts.values()), field.type is FieldType.BOOLEAN
            )
        case CardinalityAgg():
            return {"value": len(counts)}
        case DateHistogramAgg(_, interval):
            starts: dict[str, int] = {}
            for day, n in counts.items():
                start = bucket_start(day, interval)
                starts[start] = starts.get(start, 0) + n
            return histogram_result(starts, interval)
        case RangeAgg(_, ranges):
            return {
                "buckets": [
                    range_bucket(
                        spec.key,
                        spec.start,
                        spec.end,
                        sum(n for mask, n in counts.items() if mask & (1 << i)),
                    )
                    for i, spec in enumerate(ranges)
                ]
            }
    raise TypeError(f"not an aggregation: {agg!r}")  # pragma: no cover
