"""The cohort query language: a checked subset of the OpenSearch query DSL.

:func:`parse_query`, :func:`parse_aggs` and :func:`parse_sort` turn the JSON a researcher
(or a saved cohort from another site) sends into a small typed tree, and reject unknown
fields, clauses and options, and values of the wrong type, with an :class:`Invalid` whose
message names the path at fault (``query.bool.filter[1].range.SliceThickness``). The
SQLite index translates the tree to SQL; the OpenSearch index sends the tree back as
DSL, a normalised form of what came in (dates as ``yyyy-MM-dd``, explicit options).

Queries: ``bool`` (must, filter, should + minimum_should_match, must_not), ``term``,
``terms``, ``range`` (gt, gte, lt, lte), ``exists``, ``wildcard``, ``prefix``, ``match``
(text fields, operator or/and) and ``match_all``. Aggregations: ``terms`` (size),
``range`` (ranges of key/from/to), ``date_histogram`` (calendar_interval year, month,
day) and ``cardinality``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from jip.errors import Invalid
from jip.meta.fields import ID_FIELD, Field, FieldType, Scalar, analyze, coerce, lookup

MAX_TERMS = 65536  # OpenSearch's index.max_terms_count
MAX_BUCKETS = 10000
MAX_CLAUSES = 1024  # OpenSearch's indices.query.bool.max_clause_count
MAX_DEPTH = 20
MAX_RANGES = 60  # a range facet with more buckets is a histogram


@dataclass(frozen=True)
class MatchAll:
    pass


@dataclass(frozen=True)
class Term:
    field: Field
    value: Scalar


@dataclass(frozen=True)
class Terms:
    field: Field
    values: tuple[Scalar, ...]


@dataclass(frozen=True)
class Range:
    field: Field
    gt: Scalar | None = None
    gte: Scalar | None = None
    lt: Scalar | None = None
    lte: Scalar | None = None


@dataclass(frozen=True)
class Exists:
    field: Field


@dataclass(frozen=True)
class Wildcard:
    field: Field
    pattern: str  # * any run, ? one character, \ escapes


@dataclass(frozen=True)
class Prefix:
    field: Field
    prefix: str


@dataclass(frozen=True)
class Match:
    field: Field
    text: str
    tokens: tuple[str, ...]  # distinct, as the standard analyzer makes them
    operator: Literal["or", "and"] = "or"


@dataclass(frozen=True)
class Bool:
    must: tuple[Query, ...] = ()
    filter: tuple[Query, ...] = ()
    should: tuple[Query, ...] = ()
    must_not: tuple[Query, ...] = ()
    minimum_should_match: int = 0


Query = MatchAll | Term | Terms | Range | Exists | Wildcard | Prefix | Match | Bool


@dataclass(frozen=True)
class TermsAgg:
    field: Field
    size: int = 10


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


Agg = TermsAgg | RangeAgg | DateHistogramAgg | CardinalityAgg


@dataclass(frozen=True)
class SortKey:
    field: Field
    descending: bool = False


# --- queries -------------------------------------------------------------------------


def parse_query(dsl: object, path: str = "query") -> Query:
    """The typed tree of ``dsl``; None or ``{}`` mean every series."""
    if dsl is None or dsl == {}:
        return MatchAll()
    clause, body = _single_key(dsl, path, "a query clause")
    parser = _CLAUSES.get(clause)
    if parser is None:
        raise Invalid(f"{path}: unknown query clause {clause!r} (known: {', '.join(_CLAUSES)})")
    return parser(body, f"{path}.{clause}")


def _match_all(body: object, path: str) -> Query:
    _options(body, path, {"boost"})
    return MatchAll()


_OCCURS = ("must", "filter", "should", "must_not")


def _bool(body: object, path: str) -> Query:
    opts = _options(
        body, path, {"must", "filter", "should", "must_not", "boost", "minimum_should_match"}
    )
    if path.count(".bool") > MAX_DEPTH:
        raise Invalid(f"{path}: bool queries nest at most {MAX_DEPTH} deep")
    listed = [v if isinstance(v, list) else [v] for k, v in opts.items() if k in _OCCURS]
    if sum(map(len, listed)) > MAX_CLAUSES:
        raise Invalid(f"{path}: at most {MAX_CLAUSES} clauses in one bool query")
    parts: dict[str, tuple[Query, ...]] = {}
    for occur in _OCCURS:
        raw = opts.get(occur, [])
        items = raw if isinstance(raw, list) else [raw]
        parts[occur] = tuple(
            parse_query(item, f"{path}.{occur}[{i}]") for i, item in enumerate(items)
        )
    required = bool(parts["must"] or parts["filter"])
    msm = _minimum_should_match(
        opts.get("minimum_should_match"), len(parts["should"]), 0 if required else 1, path
    )
    if not any(parts.values()):
        return MatchAll()
    if not parts["should"]:
        msm = 0
    elif not required:
        msm = max(msm, 1)  # Lucene: should clauses alone match only where one does
    return Bool(minimum_should_match=msm, **parts)


def _minimum_should_match(raw: object, should: int, default: int, path: str) -> int:
    """An int, a numeric string or a percentage (negative: how many may be missed)."""
    where = f"{path}.minimum_should_match"
    if raw is None:
        return default
    text = str(raw).strip() if isinstance(raw, int | str) and not isinstance(raw, bool) else ""
    try:
        if text.endswith("%"):
            percent = int(text[:-1])
            number = should * abs(percent) // 100
            return number if percent >= 0 else should - number
        number = int(text)
    except ValueError:
        raise Invalid(f"{where}: expected an integer or a percentage, got {raw!r}") from None
    return number if number >= 0 else max(should + number, 0)


def _term(body: object, path: str) -> Query:
    name, spec = _single_key(body, path, "a field")
    field = _field(name, path, exact=True)
    value = _options(spec, f"{path}.{name}", {"value", "boost"}, "value")["value"]
    return Term(field, _value(field, value, f"{path}.{name}"))


def _terms(body: object, path: str) -> Query:
    opts = _options(body, path, None)
    opts.pop("boost", None)
    name, raw = _single_key(opts, path, "a field")
    field = _field(name, path, exact=True)
    if not isinstance(raw, list):
        raise Invalid(f"{path}.{name}: expected a list of values, got {raw!r}")
    if len(raw) > MAX_TERMS:
        raise Invalid(f"{path}.{name}: at most {MAX_TERMS} values, got {len(raw)}")
    values = tuple(_value(field, v, f"{path}.{name}[{i}]") for i, v in enumerate(raw))
    return Terms(field, tuple(dict.fromkeys(values)))


def _range(body: object, path: str) -> Query:
    name, spec = _single_key(body, path, "a field")
    field = lookup(name, path)
    where = f"{path}.{name}"
    if field.type in (FieldType.TEXT, FieldType.BOOLEAN):
        raise Invalid(
            f"{where}: range needs a number, date or keyword field; {name!r} is {field.type}"
        )
    bounds = _options(spec, where, {"gt", "gte", "lt", "lte", "boost"})
    bounds.pop("boost", None)
    if not bounds:
        raise Invalid(f"{where}: give at least one of gt, gte, lt, lte")
    values = {op: _value(field, v, f"{where}.{op}", bound=True) for op, v in bounds.items()}
    return Range(field, **values)


def _exists(body: object, path: str) -> Query:
    opts = _options(body, path, {"field", "boost"}, "field")
    return Exists(lookup(opts["field"], f"{path}.field"))


def _wildcard(body: object, path: str) -> Query:
    field, pattern = _keyword_pattern(body, path)
    return Wildcard(field, pattern)


def _prefix(body: object, path: str) -> Query:
    field, prefix = _keyword_pattern(body, path)
    return Prefix(field, prefix)


def _keyword_pattern(body: object, path: str) -> tuple[Field, str]:
    name, spec = _single_key(body, path, "a field")
    field = _field(name, path, exact=True)
    if field.type is not FieldType.KEYWORD:
        raise Invalid(f"{path}.{name}: needs a keyword field; {name!r} is {field.type}")
    value = _options(spec, f"{path}.{name}", {"value", "boost"}, "value")["value"]
    if not isinstance(value, str):
        raise Invalid(f"{path}.{name}: expected a string, got {value!r}")
    return field, value


def _match(body: object, path: str) -> Query:
    name, spec = _single_key(body, path, "a field")
    field = lookup(name, path)
    where = f"{path}.{name}"
    if field.type is not FieldType.TEXT:
        raise Invalid(f"{where}: match needs a text field; {name!r} is {field.type}: use term")
    opts = _options(spec, where, {"query", "operator", "boost"}, "query")
    text, operator = opts["query"], str(opts.get("operator", "or")).lower()
    if not isinstance(text, str):
        raise Invalid(f"{where}.query: expected a string, got {text!r}")
    if operator not in ("or", "and"):
        raise Invalid(f"{where}.operator: expected 'or' or 'and', got {opts['operator']!r}")
    tokens = tuple(dict.fromkeys(analyze(text)))
    return Match(field, text, tokens, "and" if operator == "and" else "or")


_CLAUSES = {
    "bool": _bool,
    "term": _term,
    "terms": _terms,
    "range": _range,
    "exists": _exists,
    "wildcard": _wildcard,
    "prefix": _prefix,
    "match": _match,
    "match_all": _match_all,
}


# --- aggregations and sort -----------------------------------------------------------


def parse_aggs(dsl: object, path: str = "aggs") -> dict[str, Agg]:
    """Named aggregations; sub-aggregations are not part of the language."""
    if dsl is None:
        return {}
    if not isinstance(dsl, Mapping):
        raise Invalid(f"{path}: expected an object of named aggregations, got {dsl!r}")
    out: dict[str, Agg] = {}
    for name, body in dsl.items():
        if not isinstance(name, str) or not name or "[" in name or ">" in name:
            raise Invalid(f"{path}: bad aggregation name {name!r}")
        kind, spec = _single_key(body, f"{path}.{name}", "an aggregation type")
        where = f"{path}.{name}.{kind}"
        if kind == "terms":
            opts = _options(spec, where, {"field", "size"}, "field")
            size = _int(opts.get("size", 10), f"{where}.size", 1, MAX_BUCKETS)
            out[name] = TermsAgg(_field(opts["field"], where, exact=True), size)
        elif kind == "range":
            out[name] = _range_agg(spec, where)
        elif kind == "date_histogram":
            opts = _options(spec, where, {"field", "calendar_interval"}, "field")
            field = _typed_field(opts["field"], where, (FieldType.DATE,))
            raw = opts.get("calendar_interval")
            interval = _INTERVALS.get(raw) if isinstance(raw, str) else None
            if interval is None:
                raise Invalid(
                    f"{where}.calendar_interval: expected year, month or day, got {raw!r}"
                )
            out[name] = DateHistogramAgg(field, interval)
        elif kind == "cardinality":
            opts = _options(spec, where, {"field"}, "field")
            out[name] = CardinalityAgg(_field(opts["field"], where, exact=True))
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
    opts = _options(spec, where, {"field", "ranges"}, "field")
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
        bounds = _options(item, at, {"key", "from", "to"})
        start, end = (_number(bounds.get(k), f"{at}.{k}") for k in ("from", "to"))
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
    for i, item in enumerate(items):
        at = f"{path}[{i}]"
        if isinstance(item, str):
            name, order = item, "asc"
        else:
            name, spec = _single_key(item, at, "a field")
            order = (
                spec
                if isinstance(spec, str)
                else _options(spec, f"{at}.{name}", {"order"}, "order")["order"]
            )
        field = _field(name, at, exact=True)
        if field.multi:
            raise Invalid(f"{at}: cannot sort on the multi-valued field {name!r}")
        if order not in ("asc", "desc"):
            raise Invalid(f"{at}.{name}: order must be 'asc' or 'desc', got {order!r}")
        keys.append(SortKey(field, order == "desc"))
    if keys and not any(k.field.name == ID_FIELD for k in keys):
        keys.append(SortKey(lookup(ID_FIELD)))
    return tuple(keys)


# --- helpers -------------------------------------------------------------------------


def _single_key(dsl: object, path: str, what: str) -> tuple[str, Any]:
    if not isinstance(dsl, Mapping) or len(dsl) != 1:
        raise Invalid(f"{path}: expected an object with exactly one key ({what}), got {dsl!r}")
    ((key, value),) = dsl.items()
    if not isinstance(key, str):
        raise Invalid(f"{path}: expected a string key, got {key!r}")
    return key, value


def _options(
    spec: object, path: str, known: set[str] | None, short: str | None = None
) -> dict[str, Any]:
    """The options object at ``path``; a bare value is the ``short`` option."""
    if not isinstance(spec, Mapping):
        if short is None:
            raise Invalid(f"{path}: expected an object, got {spec!r}")
        spec = {short: spec}
    opts = dict(spec)
    if known is not None:
        unknown = sorted(set(opts) - known)
        if unknown:
            raise Invalid(
                f"{path}: unknown option {unknown[0]!r} (known: {', '.join(sorted(known))})"
            )
    if short is not None and short not in opts:
        raise Invalid(f"{path}: missing {short!r}")
    return opts


def _field(name: object, path: str, exact: bool) -> Field:
    field = lookup(name, path)
    if exact and field.type is FieldType.TEXT:
        raise Invalid(
            f"{path}: {field.name!r} is a text field: use match, or "
            f"'{field.name}.keyword' for exact values"
        )
    return field


def _typed_field(name: object, path: str, types: tuple[FieldType, ...]) -> Field:
    field = lookup(name, f"{path}.field")
    if field.type not in types:
        raise Invalid(
            f"{path}.field: needs {_a(' or '.join(types))} field; {field.name!r} is {field.type}"
        )
    return field


def _value(field: Field, raw: object, path: str, bound: bool = False) -> Scalar:
    """``raw`` as a value of ``field``; a range bound on an integer field may be a float."""
    if bound and field.type is FieldType.INTEGER:
        number = _number(raw, path)
        if number is not None:
            return int(number) if number.is_integer() else number
    value = coerce(field, raw)
    if value is None:
        expected = (
            "a date (yyyyMMdd or yyyy-MM-dd)"
            if field.type is FieldType.DATE
            else (f"{_a(field.type)} value")
        )
        raise Invalid(f"{path}: expected {expected} for {field.name!r}, got {raw!r}")
    return value


def _number(raw: object, path: str) -> float | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise Invalid(f"{path}: expected a number, got {raw!r}")
    return float(raw)


def _int(raw: object, path: str, low: int, high: int) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or not low <= raw <= high:
        raise Invalid(f"{path}: expected an integer from {low} to {high}, got {raw!r}")
    return raw


def _a(noun: str) -> str:
    return f"{'an' if noun[:1] in 'aeiou' else 'a'} {noun}"
