"""The SQLite index's query compiler: cohort-language trees to SQL over its tables.

:mod:`jip.meta.index_sqlite` owns the tables (``docs``, ``sources``, ``doc_values``,
``doc_tokens``), the connections and the writes; this module turns a parsed query into a
condition on row ``d`` of ``docs``, aggregations into ``GROUP BY`` passes, and runs the
statements of one search page on a connection it is given.

Every value reaches SQL as a bound parameter; only column names from the catalogue are
written into the statement text. NULL-safe translation: a clause on a missing field is
false, and ``must_not`` of it is true, as in OpenSearch.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from jip.meta.aggs import Agg, DateHistogramAgg, RangeAgg, SortKey
from jip.meta.fields import FIELDS, ID_FIELD, Field, FieldType
from jip.meta.index import SearchResult, agg_result, project, range_bucket
from jip.meta.query import (
    Bool,
    Exists,
    Match,
    MatchAll,
    Prefix,
    Query,
    Range,
    Term,
    Terms,
    Wildcard,
)

# The number a field goes by in doc_values and doc_tokens (part of the schema).
FIELD_IDS = {name: i for i, name in enumerate(FIELDS)}
_OPS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_WIDTHS = {"year": 4, "month": 7, "day": 10}


# --- a search page --------------------------------------------------------------------


def search_page(
    conn: sqlite3.Connection,
    where: str,
    params: list[Any],
    keys: Sequence[SortKey],
    offset: int,
    limit: int,
    aggs: Mapping[str, Agg],
    wanted: list[str] | None,
) -> SearchResult:
    """A page of the documents matching ``where`` (hits, total, aggregations), read
    inside the caller's transaction so that all three agree."""
    found, total = aggregations(conn, aggs, where, params)
    ids = page_ids(conn, where, params, keys, offset, limit)
    if total is None:
        total = conn.execute(f"SELECT COUNT(*) FROM docs d WHERE {where}", params).fetchone()[0]
    return SearchResult(total, hits(conn, ids, wanted), found)


def page_ids(
    conn: sqlite3.Connection,
    where: str,
    params: list[Any],
    keys: Sequence[SortKey],
    offset: int,
    limit: int,
) -> list[int]:
    """The ids of one page in the order asked (index order without keys). No window
    count beside it: ``COUNT(*) OVER ()`` makes SQLite read and sort every match, where
    ``ORDER BY`` on an indexed column with ``LIMIT`` stops after the page (keyset pages
    by SeriesInstanceUID read one page each)."""
    if not limit:
        return []
    order = ", ".join(_order(k.field, k.descending) for k in keys) if keys else "d.id"
    rows = conn.execute(
        f"SELECT d.id FROM docs d WHERE {where} ORDER BY {order} LIMIT ? OFFSET ?",
        [*params, limit, offset],
    ).fetchall()
    return [r[0] for r in rows]


def hits(
    conn: sqlite3.Connection, ids: list[int], wanted: list[str] | None
) -> list[dict[str, Any]]:
    """The stored documents ``ids`` in that order, only ``wanted`` fields of them."""
    if not ids:
        return []
    if wanted is not None and not any(FIELDS[name].multi for name in wanted):
        return _columns_of(conn, ids, wanted)
    sources = dict(
        conn.execute(
            "SELECT id, doc FROM sources WHERE id IN (SELECT value FROM json_each(?))",
            (json.dumps(ids),),
        ).fetchall()
    )
    return [project(json.loads(sources[i]), wanted) for i in ids]


def _columns_of(
    conn: sqlite3.Connection, ids: list[int], wanted: list[str]
) -> list[dict[str, Any]]:
    """Single-valued fields straight from their columns: parsing each document's JSON
    costs more than the whole search when a keyset walk reads thousands of hits."""
    names = ", ".join(f'"{name}"' for name in wanted)
    rows = {
        row[0]: row[1:]
        for row in conn.execute(
            f"SELECT id, {names} FROM docs WHERE id IN (SELECT value FROM json_each(?))",
            (json.dumps(ids),),
        )
    }
    boolean = [FIELDS[name].type is FieldType.BOOLEAN for name in wanted]
    return [
        {
            name: bool(value) if flag else value
            for name, flag, value in zip(wanted, boolean, rows[i], strict=True)
            if value is not None
        }
        for i in ids
    ]


# --- queries to SQL ------------------------------------------------------------------


def _expr(field: Field) -> str:
    """SQL for a single-valued field's value in row ``d`` of ``docs``."""
    return f'd."{field.stored}"'


def _order(field: Field, descending: bool) -> str:
    """Missing values last in either direction, as OpenSearch sorts them."""
    direction = "DESC" if descending else "ASC"
    if field.name == ID_FIELD:
        return f"{_expr(field)} {direction}"
    return f"{_expr(field)} IS NULL, {_expr(field)} {direction}"


def _any_value(field: Field, condition: str, params: list[Any], args: list[Any]) -> str:
    """Rows of a multi-valued field where ``condition`` holds for one value."""
    params.append(FIELD_IDS[field.stored])
    params.extend(args)
    return f"d.id IN (SELECT doc_id FROM doc_values WHERE field = ? AND {condition})"


def where_sql(query: Query, params: list[Any]) -> str:
    """A SQL condition on row ``d``; appends its parameters in order."""
    match query:
        case MatchAll():
            return "1"
        case Term(field, value):
            return _compare(field, "{0} = ?", [value], params)
        case Terms(field, values):
            return _compare(
                field, "{0} IN (SELECT value FROM json_each(?))", [json.dumps(list(values))], params
            )
        case Range(field):
            ops = [(op, getattr(query, op)) for op in _OPS if getattr(query, op) is not None]
            template = " AND ".join(f"{{0}} {_OPS[op]} ?" for op, _ in ops)
            return _compare(field, template, [v for _, v in ops], params)
        case Exists(field):
            return _compare(field, "{0} IS NOT NULL", [], params)
        case Wildcard(field, pattern):
            return _compare(field, "{0} GLOB ?", [_glob(pattern)], params)
        case Prefix(field, prefix):
            return _prefix(field, prefix, params)
        case Match(field, _, tokens, operator):
            if not tokens:
                return "0"
            params.extend([FIELD_IDS[field.stored], json.dumps(list(tokens))])
            sub = (
                "SELECT doc_id FROM doc_tokens WHERE field = ? AND token IN "
                "(SELECT value FROM json_each(?))"
            )
            if operator == "and" and len(tokens) > 1:
                params.append(len(tokens))
                sub += " GROUP BY doc_id HAVING COUNT(*) = ?"
            return f"d.id IN ({sub})"
        case Bool():
            return _bool(query, params)
    raise TypeError(f"not a query node: {query!r}")  # pragma: no cover


def _compare(field: Field, template: str, args: list[Any], params: list[Any]) -> str:
    """``template`` with ``{0}`` standing for the field's value (any one value, if multi)."""
    if field.multi:
        return _any_value(field, template.format("value"), params, args)
    params.extend(args)
    return template.format(_expr(field))


def prefix_bounds(prefix: str) -> tuple[str, str | None]:
    """``starts with`` as a range [prefix, the prefix's successor), where the successor
    raises the last character that is not U+10FFFF and drops those after it (None: no
    upper bound). The SQL and the columnar cache both use it, so they agree."""
    stem = prefix.rstrip("\U0010ffff")
    if not stem:
        return prefix, None
    following = ord(stem[-1]) + 1
    if 0xD800 <= following < 0xE000:
        following = 0xE000  # no surrogates in UTF-8
    return prefix, stem[:-1] + chr(following)


def _prefix(field: Field, prefix: str, params: list[Any]) -> str:
    """``starts with`` as an index range (:func:`prefix_bounds`)."""
    low, high = prefix_bounds(prefix)
    if high is None:
        return _compare(field, "{0} >= ?", [low], params)
    return _compare(field, "{0} >= ? AND {0} < ?", [low, high], params)


def _glob(pattern: str) -> str:
    """An OpenSearch wildcard pattern (``*``, ``?``, ``\\`` escapes) as a SQLite GLOB."""
    out, escaped = [], False
    for char in pattern:
        if escaped or char not in "*?\\":
            out.append(f"[{char}]" if char in "*?[" else char)
            escaped = False
        elif char == "\\":
            escaped = True
        else:
            out.append(char)
    return "".join(out)


def wildcard_regex(pattern: str) -> re.Pattern[str]:
    """An OpenSearch wildcard pattern (``*``, ``?``, ``\\`` escapes) as a regex that
    matches what the SQL path's GLOB matches."""
    out, escaped = [], False
    for char in pattern:
        if escaped or char not in "*?\\":
            out.append(re.escape(char))
            escaped = False
        elif char == "\\":
            escaped = True
        else:
            out.append(".*" if char == "*" else ".")
    return re.compile("".join(out), re.DOTALL)


# SQLite's compiled-in limits (SQLITE_MAX_LIKE_PATTERN_LENGTH, SQLITE_MAX_COLUMN).
_SQL_MAX_PATTERN = 50000
_SQL_MAX_COLUMNS = 2000


def refused_by_sql(query: Query, aggs: Mapping[str, Agg]) -> bool:
    """A search SQLite refuses as too complex goes to SQL, which refuses it with its
    reason: the index accepts the same searches whichever path answers them."""
    if sum(not agg.field.multi for agg in aggs.values()) >= _SQL_MAX_COLUMNS:
        return True
    stack = [query]
    while stack:
        node = stack.pop()
        if isinstance(node, Wildcard) and len(node.pattern.encode()) > _SQL_MAX_PATTERN:
            return True
        if isinstance(node, Bool):
            stack.extend((*node.must, *node.filter, *node.should, *node.must_not))
    return False


def _bool(query: Bool, params: list[Any]) -> str:
    # Nested bools go last in each chain: SQLite nests a chain's first operand deepest.
    required = [(q, False) for q in (*query.must, *query.filter)]
    required += [(q, True) for q in query.must_not]
    parts = []
    for q, negated in sorted(required, key=lambda item: isinstance(item[0], Bool)):
        where = _operand(q, params)
        parts.append(f"{where} IS NOT 1" if negated else where)  # NULL: no match
    wanted = query.minimum_should_match
    should = sorted(query.should, key=lambda q: isinstance(q, Bool))
    if wanted > len(should):
        parts.append("0")
    elif wanted == 1:
        parts.append(_joined([_operand(q, params) for q in should], "OR"))
    elif wanted > 1:  # NULL (a missing field) counts as no match
        summed = _joined([f"({_operand(q, params)} IS 1)" for q in should], "+")
        parts.append(f"{summed} >= {int(wanted)}")
    return _joined(parts, "AND") if parts else "1"


def _operand(query: Query, params: list[Any]) -> str:
    """The SQL of ``query`` as an operand of AND, OR or IS. Only a range (``x >= ? AND
    x < ?``) needs parentheses: every other clause, a bool included, comes out as one
    comparison or already enclosed, and each parenthesis costs SQLite parser stack."""
    where = where_sql(query, params)
    return f"({where})" if isinstance(query, Range | Prefix) else where


_CHAIN = 256  # operands of one flat chain


def _joined(parts: list[str], operator: str) -> str:
    """``parts`` joined by ``operator``: flat chains of at most ``_CHAIN`` operands, then
    chains of those. SQLite nests a flat chain's first operand n operators deep (and
    refuses past SQLITE_MAX_EXPR_DEPTH, 1000), and each open parenthesis costs parser
    stack (it refuses past about 100): flat chains with nested bools last keep both
    small at every nesting the language allows (20 bool levels, 1024 clauses)."""
    if len(parts) > _CHAIN:
        parts = [_joined(parts[i : i + _CHAIN], operator) for i in range(0, len(parts), _CHAIN)]
    return f"({f' {operator} '.join(parts)})" if len(parts) > 1 else parts[0]


# --- aggregations --------------------------------------------------------------------


def aggregations(
    conn: sqlite3.Connection, aggs: Mapping[str, Agg], where: str, params: list[Any]
) -> tuple[dict[str, Any], int | None]:
    """The aggregations' answers, and how many documents match when that came for free."""
    single = {n: a for n, a in aggs.items() if not a.field.multi}
    found, total = _single_valued_aggs(conn, single, where, params) if single else ({}, None)
    for name, agg in aggs.items():
        if agg.field.multi:
            found[name] = _multi_valued_agg(conn, agg, where, params)
    return {name: found[name] for name in aggs}, total


def _single_valued_aggs(
    conn: sqlite3.Connection, aggs: Mapping[str, Agg], where: str, params: list[Any]
) -> tuple[dict[str, Any], int]:
    """All aggregations on single-valued fields in one pass: the matching documents are
    grouped by every aggregation's key at once, and each result is a marginal of that.
    There are never more groups than matching documents, and usually a few dozen."""
    keys, key_params = [], []
    for agg in aggs.values():
        column = _expr(agg.field)
        if isinstance(agg, DateHistogramAgg):
            column = f"substr({column}, 1, {_WIDTHS[agg.interval]})"
        elif isinstance(agg, RangeAgg):  # a bit per bucket the value falls in
            bits = []
            for i, spec in enumerate(agg.ranges):
                conditions = [
                    f"{column} {op} ?"
                    for value, op in ((spec.start, ">="), (spec.end, "<"))
                    if value is not None
                ]
                key_params += [v for v in (spec.start, spec.end) if v is not None]
                bits.append(
                    f"(CASE WHEN {' AND '.join(conditions or ['1'])} THEN {1 << i} ELSE 0 END)"
                )
            column = f"({column} IS NOT NULL) * ({' + '.join(bits)})"
        keys.append(column)
    positions = ", ".join(str(i + 1) for i in range(len(keys)))
    groups = conn.execute(
        f"SELECT {', '.join(keys)}, COUNT(*) FROM docs d WHERE {where} GROUP BY {positions}",
        [*key_params, *params],
    ).fetchall()
    out = {}
    for i, (name, agg) in enumerate(aggs.items()):
        counts: dict[Any, int] = {}
        for group in groups:
            if group[i] is not None:
                counts[group[i]] = counts.get(group[i], 0) + group[-1]
        out[name] = agg_result(agg, counts)
    return out, sum(group[-1] for group in groups)


def _multi_valued_agg(
    conn: sqlite3.Connection, agg: Agg, where: str, params: list[Any]
) -> dict[str, Any]:
    """Documents per value of a multi-valued field; a document counts once per value."""
    if isinstance(agg, RangeAgg):  # a document counts once per bucket, whatever its values
        return {
            "buckets": [
                range_bucket(
                    spec.key,
                    spec.start,
                    spec.end,
                    _docs_in_range(conn, agg.field, spec.start, spec.end, where, params),
                )
                for spec in agg.ranges
            ]
        }
    value = "dv.value"
    if isinstance(agg, DateHistogramAgg):
        value = f"substr(dv.value, 1, {_WIDTHS[agg.interval]})"
    rows = conn.execute(
        f"SELECT {value}, COUNT(DISTINCT dv.doc_id) FROM doc_values dv JOIN docs d "
        f"ON d.id = dv.doc_id WHERE dv.field = ? AND ({where}) GROUP BY 1",
        [FIELD_IDS[agg.field.stored], *params],
    ).fetchall()
    return agg_result(agg, dict(rows))


def _docs_in_range(
    conn: sqlite3.Connection,
    field: Field,
    start: float | None,
    end: float | None,
    where: str,
    params: list[Any],
) -> int:
    bounds = [(v, op) for v, op in ((start, ">="), (end, "<")) if v is not None]
    condition = " AND ".join(f"dv.value {op} ?" for _, op in bounds) or "1"
    return int(
        conn.execute(
            "SELECT COUNT(DISTINCT dv.doc_id) FROM doc_values dv JOIN docs d ON d.id = dv.doc_id "
            f"WHERE dv.field = ? AND {condition} AND ({where})",
            [FIELD_IDS[field.stored], *(v for v, _ in bounds), *params],
        ).fetchone()[0]
    )
