"""What a query and an aggregation should answer, by plain Python over the documents.

Written from OpenSearch's documented behaviour and independently of jip.meta.query and
the adapters: it reads the raw DSL, never the parsed tree. The conformance tests compare
every adapter against it.
"""

from __future__ import annotations

import fnmatch
import re
from collections import Counter
from datetime import UTC, date, datetime
from typing import Any

TEXT_FIELDS = {"StudyDescription", "SeriesDescription", "ProtocolName"}
# Lowercased words; "." and "'" join two letters or two digits, ":" two letters, "," two
# digits (Unicode word boundaries, as the standard tokenizer applies them).
_TOKEN = re.compile(
    r"\w+(?:(?:(?<=[^\W\d_])[.':](?=[^\W\d_])|(?<=\d)[.,'](?=\d))\w+)*"
)


def tokens(text: str) -> set[str]:
    return {t for t in _TOKEN.findall(text.lower()) if any(c.isalnum() for c in t)}


def values(doc: dict[str, Any], field: str) -> list[Any]:
    """Every value of ``field`` (``X.keyword`` reads X); [] when missing."""
    value = doc.get(field.removesuffix(".keyword"))
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _day(value: Any) -> Any:
    if isinstance(value, str) and re.fullmatch(r"\d{8}", value):
        return f"{value[:4]}-{value[4:6]}-{value[6:]}"
    return value


def _operand(value: Any) -> Any:
    if isinstance(value, dict):
        return value.get("value", value.get("query"))
    return value


def matches(doc: dict[str, Any], query: dict[str, Any]) -> bool:
    if not query:
        return True
    ((kind, body),) = query.items()
    if kind == "match_all":
        return True
    if kind == "bool":
        return _bool(doc, body)
    if kind == "exists":
        return bool(values(doc, body["field"]))
    ((field, spec),) = body.items()
    have = values(doc, field)
    if kind == "term":
        return _day(_operand(spec)) in have
    if kind == "terms":
        return any(_day(v) in have for v in spec)
    if kind == "range":
        checks = {"gt": lambda a, b: a > b, "gte": lambda a, b: a >= b,
                  "lt": lambda a, b: a < b, "lte": lambda a, b: a <= b}
        return any(all(checks[op](v, _day(bound)) for op, bound in spec.items()) for v in have)
    if kind == "prefix":
        return any(v.startswith(_operand(spec)) for v in have)
    if kind == "wildcard":
        pattern = _operand(spec).replace("[", "[[]")
        return any(fnmatch.fnmatchcase(v, pattern) for v in have)
    if kind == "match":
        text = _operand(spec)
        wanted = tokens(text)
        got = set().union(*(tokens(v) for v in have)) if have else set()
        if not wanted:
            return False
        operator = spec.get("operator", "or") if isinstance(spec, dict) else "or"
        return wanted <= got if operator == "and" else bool(wanted & got)
    raise AssertionError(f"reference does not know {kind}")


def _bool(doc: dict[str, Any], body: dict[str, Any]) -> bool:
    def listed(key: str) -> list[dict[str, Any]]:
        raw = body.get(key, [])
        return raw if isinstance(raw, list) else [raw]

    required = listed("must") + listed("filter")
    if not all(matches(doc, q) for q in required):
        return False
    if any(matches(doc, q) for q in listed("must_not")):
        return False
    should = listed("should")
    if not should:
        return True
    wanted = int(body.get("minimum_should_match", 0 if required else 1))
    if not required:
        wanted = max(wanted, 1)
    return sum(matches(doc, q) for q in should) >= wanted


def search(docs: list[dict[str, Any]], query: dict[str, Any]) -> list[dict[str, Any]]:
    return [d for d in docs if matches(d, query)]


def sort(docs: list[dict[str, Any]], field: str, descending: bool) -> list[str]:
    """UIDs ordered by ``field`` (missing last), ties by SeriesInstanceUID ascending."""
    field = field.removesuffix(".keyword")
    by_uid = sorted(docs, key=lambda d: d["SeriesInstanceUID"])
    present = [d for d in by_uid if field in d]
    present.sort(key=lambda d: d[field], reverse=descending)
    return [d["SeriesInstanceUID"] for d in present + [d for d in by_uid if field not in d]]


def terms(docs: list[dict[str, Any]], field: str, size: int = 10) -> dict[str, Any]:
    counts = Counter(v for d in docs for v in set(values(d, field)))
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    top = ordered[:size]
    return {
        "doc_count_error_upper_bound": 0,
        "sum_other_doc_count": sum(n for _, n in ordered[size:]),
        "buckets": [{"key": k, "doc_count": n} for k, n in top],
    }


def ranges(docs: list[dict[str, Any]], field: str, specs: list[dict[str, Any]]) -> dict:
    buckets = []
    for spec in specs:
        start, end = spec.get("from"), spec.get("to")
        inside = [d for d in docs if any(
            (start is None or v >= start) and (end is None or v < end) for v in values(d, field)
        )]
        key = spec.get("key") or (
            f"{'*' if start is None else float(start)}-{'*' if end is None else float(end)}"
        )
        bucket: dict[str, Any] = {"key": key}
        if start is not None:
            bucket["from"] = float(start)
        if end is not None:
            bucket["to"] = float(end)
        bucket["doc_count"] = len(inside)
        buckets.append(bucket)
    return {"buckets": buckets}


def date_histogram(docs: list[dict[str, Any]], field: str, interval: str) -> dict[str, Any]:
    def start(day: str) -> date:
        d = date.fromisoformat(day)
        if interval == "year":
            return d.replace(month=1, day=1)
        if interval == "month":
            return d.replace(day=1)
        return d

    counts = Counter(s for d in docs for s in {start(v) for v in values(d, field)})
    if not counts:
        return {"buckets": []}
    buckets, current, last = [], min(counts), max(counts)
    while current <= last:
        millis = int(datetime(current.year, current.month, current.day, tzinfo=UTC).timestamp())
        buckets.append({"key_as_string": current.isoformat(), "key": millis * 1000,
                        "doc_count": counts.get(current, 0)})
        if interval == "year":
            current = current.replace(year=current.year + 1)
        elif interval == "month":
            current = date(current.year + current.month // 12, current.month % 12 + 1, 1)
        else:
            current = date.fromordinal(current.toordinal() + 1)
    return {"buckets": buckets}


def cardinality(docs: list[dict[str, Any]], field: str) -> dict[str, int]:
    return {"value": len({v for d in docs for v in values(d, field)})}
