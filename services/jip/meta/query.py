"""The cohort query language: a checked subset of the OpenSearch query DSL.

:func:`parse_query` turns the JSON a researcher (or a saved cohort from another site)
sends into a small typed tree, and rejects unknown fields, clauses and options, and
values of the wrong type, with an :class:`Invalid` whose message names the path at fault
(``query.bool.filter[1].range.SliceThickness``). The SQLite index translates the tree to
SQL; the OpenSearch index sends the tree back as DSL, a normalised form of what came in
(dates as ``yyyy-MM-dd``, explicit options). Aggregations and sort, the rest of a search
request, are read by :mod:`jip.meta.aggs` with the helpers at the end of this module.

Queries: ``bool`` (must, filter, should + minimum_should_match, must_not), ``term``,
``terms``, ``range`` (gt, gte, lt, lte), ``exists``, ``wildcard``, ``prefix``, ``match``
(text fields, operator or/and) and ``match_all``.

Every query is bounded while it is parsed (:mod:`jip.meta.limits`, from ``meta`` settings):
clauses in all, values in all, and the length of patterns and values, so that both index
adapters refuse the same input with the same message, before any engine sees it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from jip.errors import Invalid
from jip.meta.fields import INT64, Field, FieldType, Scalar, analyze, coerce, lookup
from jip.meta.limits import DEFAULT_LIMITS, Budget, QueryLimits

MAX_DEPTH = 20


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
MATCH_ALL = MatchAll()  # every series: what no query (None or ``{}``) means


# --- queries -------------------------------------------------------------------------


def parse_query(dsl: object, path: str = "query", limits: QueryLimits = DEFAULT_LIMITS) -> Query:
    """The typed tree of ``dsl``; None or ``{}`` mean every series. Invalid when it
    names anything unknown or asks for more than ``limits`` allow."""
    return _parse(dsl, path, Budget(limits))


def _parse(dsl: object, path: str, budget: Budget) -> Query:
    if dsl is None or dsl == {}:
        return MatchAll()
    clause, body = single_key(dsl, path, "a query clause")
    parser = _CLAUSES.get(clause)
    if parser is None:
        raise Invalid(f"{path}: unknown query clause {clause!r} (known: {', '.join(_CLAUSES)})")
    return parser(body, f"{path}.{clause}", budget)


def _match_all(body: object, path: str, budget: Budget) -> Query:
    options(body, path, {"boost"})
    return MatchAll()


_OCCURS = ("must", "filter", "should", "must_not")


def _bool(body: object, path: str, budget: Budget) -> Query:
    opts = options(
        body, path, {"must", "filter", "should", "must_not", "boost", "minimum_should_match"}
    )
    if path.count(".bool") > MAX_DEPTH:
        raise Invalid(f"{path}: bool queries nest at most {MAX_DEPTH} deep")
    listed = [v if isinstance(v, list) else [v] for k, v in opts.items() if k in _OCCURS]
    budget.add_clauses(sum(map(len, listed)), path)  # before parsing any of them
    parts: dict[str, tuple[Query, ...]] = {}
    for occur in _OCCURS:
        raw = opts.get(occur, [])
        items = raw if isinstance(raw, list) else [raw]
        parts[occur] = tuple(
            _parse(item, f"{path}.{occur}[{i}]", budget) for i, item in enumerate(items)
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


def _term(body: object, path: str, budget: Budget) -> Query:
    name, spec = single_key(body, path, "a field")
    field = field_of(name, path, exact=True)
    value = options(spec, f"{path}.{name}", {"value", "boost"}, "value")["value"]
    budget.add_terms(1, path)
    budget.check_length(value, f"{path}.{name}")
    return Term(field, _value(field, value, f"{path}.{name}"))


def _terms(body: object, path: str, budget: Budget) -> Query:
    opts = options(body, path, None)
    opts.pop("boost", None)
    name, raw = single_key(opts, path, "a field")
    field = field_of(name, path, exact=True)
    if not isinstance(raw, list):
        raise Invalid(f"{path}.{name}: expected a list of values, got {raw!r}")
    budget.add_terms(len(raw), f"{path}.{name}")
    for i, v in enumerate(raw):
        budget.check_length(v, f"{path}.{name}[{i}]")
    values = tuple(_value(field, v, f"{path}.{name}[{i}]") for i, v in enumerate(raw))
    return Terms(field, tuple(dict.fromkeys(values)))


def _range(body: object, path: str, budget: Budget) -> Query:
    name, spec = single_key(body, path, "a field")
    field = lookup(name, path)
    where = f"{path}.{name}"
    if field.type in (FieldType.TEXT, FieldType.BOOLEAN):
        raise Invalid(
            f"{where}: range needs a number, date or keyword field; {name!r} is {field.type}"
        )
    bounds = options(spec, where, {"gt", "gte", "lt", "lte", "boost"})
    bounds.pop("boost", None)
    if not bounds:
        raise Invalid(f"{where}: give at least one of gt, gte, lt, lte")
    budget.add_terms(1, path)
    for op, v in bounds.items():
        budget.check_length(v, f"{where}.{op}")
    values = {op: _value(field, v, f"{where}.{op}", bound=True) for op, v in bounds.items()}
    return Range(field, **values)


def _exists(body: object, path: str, budget: Budget) -> Query:
    opts = options(body, path, {"field", "boost"}, "field")
    budget.add_terms(1, path)
    return Exists(lookup(opts["field"], f"{path}.field"))


def _wildcard(body: object, path: str, budget: Budget) -> Query:
    field, pattern = _keyword_pattern(body, path, budget)
    return Wildcard(field, pattern)


def _prefix(body: object, path: str, budget: Budget) -> Query:
    field, prefix = _keyword_pattern(body, path, budget)
    return Prefix(field, prefix)


def _keyword_pattern(body: object, path: str, budget: Budget) -> tuple[Field, str]:
    name, spec = single_key(body, path, "a field")
    field = field_of(name, path, exact=True)
    if field.type is not FieldType.KEYWORD:
        raise Invalid(f"{path}.{name}: needs a keyword field; {name!r} is {field.type}")
    value = options(spec, f"{path}.{name}", {"value", "boost"}, "value")["value"]
    if not isinstance(value, str):
        raise Invalid(f"{path}.{name}: expected a string, got {value!r}")
    budget.add_terms(1, path)
    budget.check_length(value, f"{path}.{name}", pattern=True)
    return field, value


def _match(body: object, path: str, budget: Budget) -> Query:
    name, spec = single_key(body, path, "a field")
    field = lookup(name, path)
    where = f"{path}.{name}"
    if field.type is not FieldType.TEXT:
        raise Invalid(f"{where}: match needs a text field; {name!r} is {field.type}: use term")
    opts = options(spec, where, {"query", "operator", "boost"}, "query")
    text, operator = opts["query"], str(opts.get("operator", "or")).lower()
    if not isinstance(text, str):
        raise Invalid(f"{where}.query: expected a string, got {text!r}")
    budget.check_length(text, f"{where}.query")
    if operator not in ("or", "and"):
        raise Invalid(f"{where}.operator: expected 'or' or 'and', got {opts['operator']!r}")
    tokens = tuple(dict.fromkeys(analyze(text)))
    budget.add_terms(max(len(tokens), 1), where)
    return Match(field, text, tokens, "and" if operator == "and" else "or")


_CLAUSES: dict[str, Callable[[object, str, Budget], Query]] = {
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


# --- reading JSON (shared with jip.meta.aggs) --------------------------------------


def single_key(dsl: object, path: str, what: str) -> tuple[str, Any]:
    if not isinstance(dsl, Mapping) or len(dsl) != 1:
        raise Invalid(f"{path}: expected an object with exactly one key ({what}), got {dsl!r}")
    ((key, value),) = dsl.items()
    if not isinstance(key, str):
        raise Invalid(f"{path}: expected a string key, got {key!r}")
    return key, value


def options(
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


def field_of(name: object, path: str, exact: bool) -> Field:
    field = lookup(name, path)
    if exact and field.type is FieldType.TEXT:
        raise Invalid(
            f"{path}: {field.name!r} is a text field: use match, or "
            f"'{field.name}.keyword' for exact values"
        )
    return field


def _value(field: Field, raw: object, path: str, bound: bool = False) -> Scalar:
    """``raw`` as a value of ``field``; a range bound on an integer field may be a float."""
    if bound and field.type is FieldType.INTEGER:
        number = as_number(raw, path)
        if number is not None:
            return int(number) if number.is_integer() and abs(number) < INT64 else number
    value = coerce(field, raw)
    if value is None:
        expected = (
            "a date (yyyyMMdd or yyyy-MM-dd)"
            if field.type is FieldType.DATE
            else (f"{a_noun(field.type)} value")
        )
        raise Invalid(f"{path}: expected {expected} for {field.name!r}, got {raw!r}")
    return value


def as_number(raw: object, path: str) -> float | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise Invalid(f"{path}: expected a number, got {raw!r}")
    return float(raw)


def a_noun(noun: str) -> str:
    return f"{'an' if noun[:1] in 'aeiou' else 'a'} {noun}"
