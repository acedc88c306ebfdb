"""The metadata index in one SQLite file (the embedded shape), ``sqlite:///path``.

Schema, built for cohort queries over a few hundred thousand series:

- ``docs``: one narrow row per series, a typed column per single-valued catalogue field,
  with an index on the fields most cohort queries filter and facet on (those marked
  ``column``: Modality, BodyPartExamined, SliceThickness, PatientAgeYears, StudyDate, ...).
  Every single-valued field is a real column rather than ``json_extract`` from JSON: a
  column costs nothing to read, JSON is parsed for every row a query touches.
- ``sources``: the documents as JSON, apart from ``docs`` so that scans stay small; read
  only for the page of hits returned, and to rebuild the tables when the catalogue changes.
- ``doc_values (field, value, doc_id)``: one row per distinct value of a multi-valued
  field (ImageType, SegmentLabels, PixelSpacing, ...), so "any value matches" is an
  indexed ``IN`` and a facet counts each document once per value.
- ``doc_tokens (field, token, doc_id)``: the standard-analyzer tokens of text fields for
  ``match``. A token table rather than FTS5: FTS5's tokenizers split and fold differently
  from OpenSearch's standard analyzer, and the token table needs no query syntax.

Every value reaches SQL as a bound parameter; only column names from the catalogue are
written into the statement text. NULL-safe translation: a clause on a missing field is
false, and ``must_not`` of it is true, as in OpenSearch.

The stdlib ``sqlite3`` module rather than SQLAlchemy: the statements are SQLite-only
(``json_each``, ``WITHOUT ROWID``, window functions), built per query from the tree, and
run on the hot path of every search, where SQLAlchemy's compilation would only add time.
One connection per thread (one shared for ``:memory:``), WAL so that searches never wait
for the indexer, and
``synchronous=NORMAL``: the index is derived data that the indexer rebuilds from the
catalog, so a lost last transaction after a power cut costs nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from jip.errors import Invalid
from jip.meta.fields import FIELDS, ID_FIELD, Field, FieldType, analyze, normalize_document
from jip.meta.index import (
    SearchResult,
    agg_result,
    as_aggs,
    as_query,
    as_sort,
    check_fields,
    check_page,
    project,
    range_bucket,
)
from jip.meta.query import (
    Agg,
    Bool,
    DateHistogramAgg,
    Exists,
    Match,
    MatchAll,
    Prefix,
    Query,
    Range,
    RangeAgg,
    SortKey,
    Term,
    Terms,
    Wildcard,
)

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1  # raise it when the layout or jip.meta.fields.analyze changes
_SQL_TYPES = {
    FieldType.KEYWORD: "TEXT",
    FieldType.TEXT: "TEXT",
    FieldType.DATE: "TEXT",
    FieldType.INTEGER: "INTEGER",
    FieldType.FLOAT: "REAL",
    FieldType.BOOLEAN: "INTEGER",
}
# Indexed fields first: SQLite walks a row's header up to the column it reads.
_COLUMNS = sorted(
    (f for f in FIELDS.values() if not f.multi and f.name != ID_FIELD), key=lambda f: not f.column
)
_COLUMN_NAMES = [f.name for f in _COLUMNS]
_FIELD_IDS = {name: i for i, name in enumerate(FIELDS)}
_OPS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def _fingerprint() -> str:
    spec = [(f.name, f.type.value, f.multi, f.column) for f in FIELDS.values()]
    return hashlib.sha256(json.dumps([SCHEMA_VERSION, spec]).encode()).hexdigest()[:16]


class SqliteIndex:
    """:class:`jip.meta.index.MetaIndex` on SQLite."""

    def __init__(self, path: str | Path) -> None:
        """A file path, or ``:memory:`` for an index that lives as long as this object
        (one connection that all threads take turns on)."""
        text = str(path)
        self._target = text or ":memory:"
        if self._target != ":memory:":
            Path(text).parent.mkdir(parents=True, exist_ok=True)
        self._serial = threading.RLock() if self._target == ":memory:" else None
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._shared = self._open() if self._serial else None
        with self._guard():
            _ensure_schema(self._connection())

    @classmethod
    def from_url(cls, url: str) -> SqliteIndex:
        """``sqlite:///relative/path``, ``sqlite:////absolute/path`` or ``sqlite://``."""
        if not url.startswith("sqlite://"):
            raise Invalid(f"not a SQLite index URL: {url!r}")
        rest = url.removeprefix("sqlite://")
        return cls(rest.removeprefix("/") if rest else ":memory:")

    # -- writing ----------------------------------------------------------------------

    def upsert(self, docs: Iterable[Mapping[str, Any]]) -> int:
        latest = {d[ID_FIELD]: d for d in map(normalize_document, docs)}
        if latest:
            with self._write() as conn:
                _write_docs(conn, latest)
        return len(latest)

    def delete(self, series_uids: Iterable[str]) -> int:
        uids = list(series_uids)
        if not uids:
            return 0
        with self._write() as conn:
            ids = list(_remove_side_rows(conn, uids).values())
            for table in ("docs", "sources"):
                conn.execute(
                    f"DELETE FROM {table} WHERE id IN (SELECT value FROM json_each(?))",
                    (json.dumps(ids),),
                )
        return len(ids)

    def clear(self) -> None:
        with self._write() as conn:
            for table in ("doc_values", "doc_tokens", "docs", "sources"):
                conn.execute(f"DELETE FROM {table}")

    # -- reading ----------------------------------------------------------------------

    def search(
        self,
        query: object = None,
        sort: object = None,
        offset: int = 0,
        limit: int = 20,
        fields: Sequence[str] | None = None,
        aggs: object = None,
    ) -> SearchResult:
        tree, keys, wanted = as_query(query), as_sort(sort), check_fields(fields)
        specs = as_aggs(aggs) if aggs else {}
        check_page(offset, limit)
        params: list[Any] = []
        where = _where(tree, params)
        with self._read() as conn:  # one snapshot: hits, total and facets agree
            return _search(conn, where, params, keys, offset, limit, specs, wanted)

    def aggregate(self, query: object, aggs: object) -> dict[str, Any]:
        params: list[Any] = []
        where = _where(as_query(query), params)
        with self._read() as conn:
            return _aggregations(conn, as_aggs(aggs), where, params)[0]

    def field_values(self, field: str, size: int = 100) -> list[dict[str, Any]]:
        result = self.aggregate(None, {"values": {"terms": {"field": field, "size": size}}})
        return list(result["values"]["buckets"])

    def count(self) -> int:
        with self._read() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM docs").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()

    # -- connections ------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self._target, isolation_level=None, check_same_thread=False, timeout=30
        )
        for pragma in (
            "journal_mode=WAL",
            "synchronous=NORMAL",
            "busy_timeout=30000",
            "temp_store=MEMORY",
            "cache_size=-131072",
            "mmap_size=1073741824",
        ):
            conn.execute(f"PRAGMA {pragma}")
        with self._lock:
            self._connections.append(conn)
        return conn

    def _connection(self) -> sqlite3.Connection:
        if self._shared is not None:
            return self._shared
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._open()
        return conn

    def _guard(self) -> AbstractContextManager[object]:
        return self._serial if self._serial is not None else nullcontext()

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._guard():
            conn = self._connection()
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("COMMIT")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._guard():
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")


def _search(
    conn: sqlite3.Connection,
    where: str,
    params: list[Any],
    keys: tuple[SortKey, ...],
    offset: int,
    limit: int,
    aggs: Mapping[str, Agg],
    wanted: list[str] | None,
) -> SearchResult:
    found, total = _aggregations(conn, aggs, where, params)
    if keys:  # one pass for the sorted page and the total (COUNT OVER the match)
        order = ", ".join(_order(k.field, k.descending) for k in keys)
        rows = (
            conn.execute(
                f"SELECT d.id, COUNT(*) OVER () FROM docs d WHERE {where} ORDER BY {order} "
                "LIMIT ? OFFSET ?",
                [*params, limit, offset],
            ).fetchall()
            if limit
            else []
        )
        total = rows[0][1] if rows else total
    else:  # index order: the page stops after `limit` matches
        rows = conn.execute(
            f"SELECT d.id FROM docs d WHERE {where} ORDER BY d.id LIMIT ? OFFSET ?",
            [*params, limit, offset],
        ).fetchall()
    if total is None:
        total = conn.execute(f"SELECT COUNT(*) FROM docs d WHERE {where}", params).fetchone()[0]
    ids = [r[0] for r in rows]
    sources = dict(
        conn.execute(
            "SELECT id, doc FROM sources WHERE id IN (SELECT value FROM json_each(?))",
            (json.dumps(ids),),
        ).fetchall()
    )
    hits = [project(json.loads(sources[i]), wanted) for i in ids]
    return SearchResult(total, hits, found)


# --- schema --------------------------------------------------------------------------


def _ensure_schema(conn: sqlite3.Connection) -> None:
    """Create the tables, or rebuild them from the stored JSON when the catalogue changed."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        row = conn.execute("SELECT value FROM meta WHERE key = 'fingerprint'").fetchone()
        if row is not None and row[0] == _fingerprint():
            conn.execute("COMMIT")
            return
        old_docs = []
        if row is not None:
            old_docs = [json.loads(r[0]) for r in conn.execute("SELECT doc FROM sources")]
        for table in ("docs", "sources", "doc_values", "doc_tokens"):
            conn.execute(f"DROP TABLE IF EXISTS {table}")
        _create_tables(conn)
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('fingerprint', ?)", (_fingerprint(),))
        _write_docs(conn, _still_valid(old_docs))
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _create_tables(conn: sqlite3.Connection) -> None:
    columns = "".join(f', "{f.name}" {_SQL_TYPES[f.type]}' for f in _COLUMNS)
    conn.execute(
        f'CREATE TABLE docs (id INTEGER PRIMARY KEY, "SeriesInstanceUID" TEXT NOT NULL '
        f"UNIQUE{columns})"
    )
    for f in _COLUMNS:
        if f.column:
            conn.execute(f'CREATE INDEX "ix_docs_{f.name}" ON docs ("{f.name}")')
    conn.execute("CREATE TABLE sources (id INTEGER PRIMARY KEY, doc TEXT NOT NULL)")
    # No index on doc_id: rows are deleted by their full key, recomputed from the source.
    conn.execute(
        "CREATE TABLE doc_values (field INTEGER NOT NULL, value NOT NULL, "
        "doc_id INTEGER NOT NULL, PRIMARY KEY (field, value, doc_id)) WITHOUT ROWID"
    )
    conn.execute(
        "CREATE TABLE doc_tokens (field INTEGER NOT NULL, token TEXT NOT NULL, "
        "doc_id INTEGER NOT NULL, PRIMARY KEY (field, token, doc_id)) WITHOUT ROWID"
    )


def _still_valid(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Stored documents that the current catalogue accepts (fields it dropped removed)."""
    valid = {}
    for doc in docs:
        try:
            checked = normalize_document({k: v for k, v in doc.items() if k in FIELDS})
        except Invalid as exc:
            log.warning("document dropped from the rebuilt index: %s", exc)
            continue
        valid[checked[ID_FIELD]] = checked
    return valid


def _write_docs(conn: sqlite3.Connection, latest: Mapping[str, Mapping[str, Any]]) -> None:
    """Insert or replace checked documents (by SeriesInstanceUID), inside a transaction."""
    if not latest:
        return
    known = _remove_side_rows(conn, list(latest))
    next_id = conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM docs").fetchone()[0]
    rows: list[list[Any]] = []
    sources: list[tuple[int, str]] = []
    values: list[tuple[int, Any, int]] = []
    tokens: list[tuple[int, Any, int]] = []
    for uid, doc in latest.items():
        doc_id = known.get(uid)
        if doc_id is None:
            doc_id, next_id = next_id, next_id + 1
        rows.append([doc_id, uid, *map(doc.get, _COLUMN_NAMES)])  # bools bind as 0/1
        sources.append((doc_id, json.dumps(doc, separators=(",", ":"))))
        _side_rows(doc_id, doc, values, tokens)
    names = ", ".join(f'"{f.name}"' for f in _COLUMNS)
    marks = ", ".join("?" * (len(_COLUMNS) + 2))
    conn.executemany(
        f'INSERT OR REPLACE INTO docs (id, "SeriesInstanceUID", {names}) VALUES ({marks})', rows
    )
    conn.executemany("INSERT OR REPLACE INTO sources VALUES (?, ?)", sources)
    conn.executemany("INSERT OR IGNORE INTO doc_values VALUES (?, ?, ?)", values)
    conn.executemany("INSERT OR IGNORE INTO doc_tokens VALUES (?, ?, ?)", tokens)


def _remove_side_rows(conn: sqlite3.Connection, uids: list[str]) -> dict[str, int]:
    """Drop the value and token rows of the stored documents ``uids``; their ids by uid."""
    known: dict[str, int] = {}
    values: list[tuple[int, Any, int]] = []
    tokens: list[tuple[int, Any, int]] = []
    for uid, doc_id, source in conn.execute(
        'SELECT d."SeriesInstanceUID", d.id, s.doc FROM docs d JOIN sources s ON s.id = d.id '
        'WHERE d."SeriesInstanceUID" IN (SELECT value FROM json_each(?))',
        (json.dumps(uids),),
    ).fetchall():
        known[uid] = doc_id
        _side_rows(doc_id, json.loads(source), values, tokens)
    for table, key, rows in (("doc_values", "value", values), ("doc_tokens", "token", tokens)):
        conn.executemany(f"DELETE FROM {table} WHERE field = ? AND {key} = ? AND doc_id = ?", rows)
    return known


def _side_rows(
    doc_id: int,
    doc: Mapping[str, Any],
    values: list[tuple[int, Any, int]],
    tokens: list[tuple[int, Any, int]],
) -> None:
    for name, value in doc.items():
        field = FIELDS.get(name)
        if field is None:
            continue
        items = value if field.multi else [value]
        if field.multi:
            values.extend((_FIELD_IDS[name], v, doc_id) for v in set(items))
        if field.type is FieldType.TEXT:
            found = {t for item in items for t in analyze(item)}
            tokens.extend((_FIELD_IDS[name], t, doc_id) for t in found)


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
    params.append(_FIELD_IDS[field.stored])
    params.extend(args)
    return f"d.id IN (SELECT doc_id FROM doc_values WHERE field = ? AND {condition})"


def _where(query: Query, params: list[Any]) -> str:
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
            params.extend([_FIELD_IDS[field.stored], json.dumps(list(tokens))])
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


def _prefix(field: Field, prefix: str, params: list[Any]) -> str:
    """``starts with`` as an index range: [prefix, the prefix's successor), where the
    successor raises the last character that is not U+10FFFF and drops those after it."""
    stem = prefix.rstrip("\U0010ffff")
    if not stem:
        return _compare(field, "{0} >= ?", [prefix], params)
    following = ord(stem[-1]) + 1
    if 0xD800 <= following < 0xE000:
        following = 0xE000  # no surrogates in UTF-8
    return _compare(field, "{0} >= ? AND {0} < ?", [prefix, stem[:-1] + chr(following)], params)


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


def _bool(query: Bool, params: list[Any]) -> str:
    parts = [f"({_where(q, params)})" for q in (*query.must, *query.filter)]
    parts += [f"NOT IFNULL(({_where(q, params)}), 0)" for q in query.must_not]
    wanted = query.minimum_should_match
    if wanted > len(query.should):
        parts.append("0")
    elif wanted == 1:
        parts.append("(" + " OR ".join(f"({_where(q, params)})" for q in query.should) + ")")
    elif wanted > 1:
        summed = " + ".join(f"IFNULL(({_where(q, params)}), 0)" for q in query.should)
        parts.append(f"({summed}) >= {int(wanted)}")
    return " AND ".join(parts) or "1"


# --- aggregations --------------------------------------------------------------------


def _aggregations(
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
        [_FIELD_IDS[agg.field.stored], *params],
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
            [_FIELD_IDS[field.stored], *(v for v, _ in bounds), *params],
        ).fetchone()[0]
    )


_WIDTHS = {"year": 4, "month": 7, "day": 10}
