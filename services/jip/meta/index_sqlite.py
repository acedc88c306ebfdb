"""The metadata index in one SQLite file (the embedded shape), ``sqlite:///path``.

SQLite stores; searches are answered by a columnar cache in each process
(:mod:`jip.meta.index_sqlite_columns`). Measured at 200,000 series, the researcher's
query with two facets took 63 ms by SQL (row by row, whatever the indexes) and 3.4 ms
from the columns; the secondary B-tree indexes SQL needed halved the indexing rate, so
``docs`` keeps only the unique index on SeriesInstanceUID (upserts, keyset pages) and
one on Modality.

Schema:

- ``docs``: one narrow row per series, a typed column per single-valued catalogue field
  (those marked ``column`` first: they are what queries name most).
- ``sources``: the documents as JSON, apart from ``docs`` so that scans stay small; read
  only for the page of hits returned, to bring column caches up to date, and to rebuild
  the tables when the catalogue changes.
- ``doc_values (field, value, doc_id)``: one row per distinct value of a multi-valued
  field (ImageType, SegmentLabels, PixelSpacing, ...), so "any value matches" is an
  indexed ``IN`` and a facet counts each document once per value.
- ``doc_tokens (field, token, doc_id)``: the standard-analyzer tokens of text fields for
  ``match``. A token table rather than FTS5: FTS5's tokenizers split and fold differently
  from OpenSearch's standard analyzer, and the token table needs no query syntax.
- ``changes (rev, id)`` and ``meta`` (``epoch``, ``generation``): every write
  transaction raises the generation and logs the ids it wrote or removed, so that column
  caches in any process apply just those; the log keeps the last 1,024 generations.

Queries, aggregations and the statements of a search page are compiled by
:mod:`jip.meta.index_sqlite_query`; the tables' layout and rows are
:mod:`jip.meta.index_sqlite_schema`'s; a whole-index rebuild in bulk (staged tables
swapped in at the end) is :mod:`jip.meta.index_sqlite_bulk`'s; this module holds the
connections and the incremental writes.

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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from jip.errors import Invalid, Unavailable
from jip.meta.aggs import Agg, SortKey, parse_aggs
from jip.meta.fields import FIELDS, ID_FIELD, normalize_document
from jip.meta.index import SearchResult, check_fields, check_page
from jip.meta.index_sqlite_bulk import rebuild as bulk_rebuild
from jip.meta.index_sqlite_columns import ColumnCache
from jip.meta.index_sqlite_query import (
    aggregations,
    hits,
    page_ids,
    search_page,
    where_sql,
)
from jip.meta.index_sqlite_schema import (
    INSERT_DOC,
    SideRow,
    create_tables,
    doc_row,
    new_epoch,
    side_rows,
    source,
)
from jip.meta.query import MATCH_ALL, Query

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2  # raise it when the layout or jip.meta.fields.analyze changes
_LISTED = "d.id IN (SELECT value FROM json_each(?))"


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
        self._columns = ColumnCache()
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
                _log_changes(conn, _write_docs(conn, latest))
        return len(latest)

    def rebuild(
        self, docs: Iterable[Mapping[str, Any]], progress: Callable[[int], None] | None = None
    ) -> int:
        """Replace every document with ``docs`` in bulk (:mod:`jip.meta.index_sqlite_bulk`:
        no per-row index upkeep; searches see the old contents until it is done);
        returns how many the index holds. ``progress``: documents loaded so far."""
        return bulk_rebuild(self._write, docs, progress)

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
            _log_changes(conn, ids)
        return len(ids)

    def clear(self) -> None:
        with self._write() as conn:
            for table in ("doc_values", "doc_tokens", "docs", "sources", "changes"):
                conn.execute(f"DELETE FROM {table}")
            new_epoch(conn)

    # -- reading ----------------------------------------------------------------------

    def search(
        self,
        query: Query = MATCH_ALL,
        sort: Sequence[SortKey] = (),
        offset: int = 0,
        limit: int = 20,
        fields: Sequence[str] | None = None,
        aggs: Mapping[str, Agg] | None = None,
    ) -> SearchResult:
        wanted = check_fields(fields)
        check_page(offset, limit)
        params: list[Any] = []
        where = where_sql(query, params)
        with self._read() as conn, _refusals():  # one snapshot: hits, total, facets agree
            found = self._columns.search(conn, query, aggs or {})
            if found is None:
                return search_page(conn, where, params, sort, offset, limit, aggs or {}, wanted)
            matched, facets = found
            if not sort:
                ids = [int(i) for i in matched[offset : offset + limit]]
            elif all(key.field.name == ID_FIELD for key in sort):  # keyset pages: the
                ids = page_ids(conn, where, params, sort, offset, limit)  # unique index
            else:  # SQLite sorts the matches alone
                listed = "[" + ",".join(map(str, matched.tolist())) + "]"
                ids = page_ids(conn, _LISTED, [listed], sort, offset, limit)
            return SearchResult(len(matched), hits(conn, ids, wanted), facets)

    def aggregate(self, query: Query, aggs: Mapping[str, Agg]) -> dict[str, Any]:
        params: list[Any] = []
        where = where_sql(query, params)
        with self._read() as conn, _refusals():
            found = self._columns.search(conn, query, aggs)
            return found[1] if found is not None else aggregations(conn, aggs, where, params)[0]

    def field_values(self, field: str, size: int = 100) -> list[dict[str, Any]]:
        values = parse_aggs({"values": {"terms": {"field": field, "size": size}}})
        result = self.aggregate(MATCH_ALL, values)
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


# SQLite's answers to a statement too big or too complex, whatever the database's state.
_TOO_COMPLEX = (
    "too many",  # columns, terms in ORDER BY, SQL variables, arguments
    "too large",  # expression tree depth
    "too complex",  # LIKE or GLOB pattern
    "too big",  # string or blob
    "parser stack overflow",
)


@contextmanager
def _refusals() -> Iterator[None]:
    """A statement built from a search that SQLite refuses as too big or too complex is
    the caller's error (400 naming SQLite's reason), never a 500; any other database
    error (locked, I/O) means the index is unavailable (503)."""
    try:
        yield
    except (sqlite3.OperationalError, sqlite3.DataError, OverflowError) as exc:
        reason = str(exc)
        if isinstance(exc, OverflowError) or any(m in reason.lower() for m in _TOO_COMPLEX):
            raise Invalid(
                f"query: the index refused this search as too complex ({reason}); use fewer "
                "clauses, values or aggregations, or shorter patterns"
            ) from exc
        raise Unavailable(f"the metadata index cannot answer: {reason}") from exc


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
        for table in ("docs", "sources", "doc_values", "doc_tokens", "changes"):
            conn.execute(f"DROP TABLE IF EXISTS {table}")
        create_tables(conn)
        conn.execute(
            "CREATE TABLE changes (rev INTEGER NOT NULL, id INTEGER NOT NULL, "
            "PRIMARY KEY (rev, id)) WITHOUT ROWID"
        )
        new_epoch(conn)
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('fingerprint', ?)", (_fingerprint(),))
        _write_docs(conn, _still_valid(old_docs))
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


# Generations of the change log kept for the column caches of other processes; one that
# falls further behind reloads its columns.
_KEEP_GENERATIONS = 1024


def _log_changes(conn: sqlite3.Connection, ids: Iterable[int]) -> None:
    """Raise the generation and record the documents this transaction wrote or removed,
    so that column caches (:mod:`jip.meta.index_sqlite_columns`) apply only those."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
    generation = int(row[0]) + 1
    conn.execute("UPDATE meta SET value = ? WHERE key = 'generation'", (str(generation),))
    conn.executemany("INSERT OR IGNORE INTO changes VALUES (?, ?)", ((generation, i) for i in ids))
    if generation % _KEEP_GENERATIONS == 0:
        pruned = generation - _KEEP_GENERATIONS
        conn.execute("DELETE FROM changes WHERE rev <= ?", (pruned,))
        conn.execute("UPDATE meta SET value = ? WHERE key = 'pruned'", (str(pruned),))


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


def _write_docs(conn: sqlite3.Connection, latest: Mapping[str, Mapping[str, Any]]) -> list[int]:
    """Insert or replace checked documents (by SeriesInstanceUID), inside a transaction;
    returns their ids."""
    if not latest:
        return []
    known = _remove_side_rows(conn, list(latest))
    next_id = conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM docs").fetchone()[0]
    rows: list[list[Any]] = []
    sources: list[tuple[int, str]] = []
    values: list[SideRow] = []
    tokens: list[SideRow] = []
    for uid, doc in latest.items():
        doc_id = known.get(uid)
        if doc_id is None:
            doc_id, next_id = next_id, next_id + 1
        rows.append(doc_row(doc_id, uid, doc))
        sources.append((doc_id, source(doc)))
        side_rows(doc_id, doc, values, tokens)
    conn.executemany(INSERT_DOC.format(table="docs"), rows)
    conn.executemany("INSERT OR REPLACE INTO sources VALUES (?, ?)", sources)
    conn.executemany("INSERT OR IGNORE INTO doc_values VALUES (?, ?, ?)", values)
    conn.executemany("INSERT OR IGNORE INTO doc_tokens VALUES (?, ?, ?)", tokens)
    return [row[0] for row in rows]


def _remove_side_rows(conn: sqlite3.Connection, uids: list[str]) -> dict[str, int]:
    """Drop the value and token rows of the stored documents ``uids``; their ids by uid."""
    known: dict[str, int] = {}
    values: list[SideRow] = []
    tokens: list[SideRow] = []
    for uid, doc_id, doc in conn.execute(
        'SELECT d."SeriesInstanceUID", d.id, s.doc FROM docs d JOIN sources s ON s.id = d.id '
        'WHERE d."SeriesInstanceUID" IN (SELECT value FROM json_each(?))',
        (json.dumps(uids),),
    ).fetchall():
        known[uid] = doc_id
        side_rows(doc_id, json.loads(doc), values, tokens)
    for table, key, rows in (("doc_values", "value", values), ("doc_tokens", "token", tokens)):
        conn.executemany(f"DELETE FROM {table} WHERE field = ? AND {key} = ? AND doc_id = ?", rows)
    return known
