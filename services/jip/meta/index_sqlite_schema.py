"""The SQLite index's tables and rows: what the incremental writes
(:mod:`jip.meta.index_sqlite`) and the bulk rebuild (:mod:`jip.meta.index_sqlite_bulk`)
both lay out, so that the two write the same rows."""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Mapping
from typing import Any

from jip.meta.fields import FIELDS, ID_FIELD, FieldType, analyze
from jip.meta.index_sqlite_query import FIELD_IDS

_SQL_TYPES = {
    FieldType.KEYWORD: "TEXT",
    FieldType.TEXT: "TEXT",
    FieldType.DATE: "TEXT",
    FieldType.INTEGER: "INTEGER",
    FieldType.FLOAT: "REAL",
    FieldType.BOOLEAN: "INTEGER",
}
# The fields queries name most first: SQLite walks a row's header up to the column it reads.
COLUMNS = sorted(
    (f for f in FIELDS.values() if not f.multi and f.name != ID_FIELD), key=lambda f: not f.column
)
COLUMN_NAMES = [f.name for f in COLUMNS]
# The statement that writes one row of ``docs`` (``{table}``: docs or its staged copy).
INSERT_DOC = (
    'INSERT OR REPLACE INTO {table} (id, "SeriesInstanceUID", '
    + ", ".join(f'"{name}"' for name in COLUMN_NAMES)
    + ") VALUES ("
    + ", ".join("?" * (len(COLUMNS) + 2))
    + ")"
)
SideRow = tuple[int, Any, int]  # (field number, value or token, document id)


def create_tables(conn: sqlite3.Connection, suffix: str = "", indexed: bool = True) -> None:
    """``docs``, ``sources``, ``doc_values`` and ``doc_tokens`` (named with ``suffix``);
    without ``indexed``, ``docs`` has no secondary index yet (:func:`index_docs` adds
    them once a bulk load is done, by one sort instead of a B-tree insert per row)."""
    columns = "".join(f', "{f.name}" {_SQL_TYPES[f.type]}' for f in COLUMNS)
    conn.execute(
        f'CREATE TABLE docs{suffix} (id INTEGER PRIMARY KEY, "SeriesInstanceUID" TEXT NOT NULL'
        f"{' UNIQUE' if indexed else ''}{columns})"
    )
    if indexed:
        index_docs(conn, suffix, unique=False)
    conn.execute(f"CREATE TABLE sources{suffix} (id INTEGER PRIMARY KEY, doc TEXT NOT NULL)")
    # No index on doc_id: rows are deleted by their full key, recomputed from the source.
    for table, key in (("doc_values", "value NOT NULL"), ("doc_tokens", "token TEXT NOT NULL")):
        name = key.split()[0]
        conn.execute(
            f"CREATE TABLE {table}{suffix} (field INTEGER NOT NULL, {key}, "
            f"doc_id INTEGER NOT NULL, PRIMARY KEY (field, {name}, doc_id)) WITHOUT ROWID"
        )


def index_docs(conn: sqlite3.Connection, suffix: str, unique: bool) -> None:
    """The secondary indexes of ``docs{suffix}``. The SQL path (a snapshot older than the
    process's columns) keeps one on the field nearly every cohort query names; few
    distinct values, so cheap to maintain. A staged table's indexes carry a name of their
    own, as SQLite cannot rename an index when the table is renamed."""
    tag = f"{suffix}_{secrets.token_hex(4)}" if suffix else ""
    if unique:
        conn.execute(f'CREATE UNIQUE INDEX "ux_docs{tag}" ON docs{suffix} ("SeriesInstanceUID")')
    conn.execute(f'CREATE INDEX "ix_docs_Modality{tag}" ON docs{suffix} ("Modality")')


def new_epoch(conn: sqlite3.Connection) -> None:
    """Tell every process's column cache to start over (tables created or cleared)."""
    for key, value in (("epoch", secrets.token_hex(8)), ("generation", "0"), ("pruned", "0")):
        conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))


def doc_row(doc_id: int, uid: str, doc: Mapping[str, Any]) -> list[Any]:
    """The ``docs`` row of a checked document (booleans bind as 0/1)."""
    return [doc_id, uid, *map(doc.get, COLUMN_NAMES)]


def source(doc: Mapping[str, Any]) -> str:
    """The ``sources`` JSON of a checked document."""
    return json.dumps(doc, separators=(",", ":"))


# The fields with rows in doc_values (multi-valued) or doc_tokens (text): a document is
# looked up for these few rather than walked whole (a third of the indexing time).
_SIDE_FIELDS = [
    (f.name, FIELD_IDS[f.name], f.multi, f.type is FieldType.TEXT)
    for f in FIELDS.values()
    if f.multi or f.type is FieldType.TEXT
]


def side_rows(
    doc_id: int, doc: Mapping[str, Any], values: list[SideRow], tokens: list[SideRow]
) -> None:
    """Append the ``doc_values`` and ``doc_tokens`` rows of one checked document."""
    for name, number, multi, text in _SIDE_FIELDS:
        value = doc.get(name)
        if value is None:
            continue
        items = value if multi else [value]
        if multi:
            values.extend((number, v, doc_id) for v in set(items))
        if text:
            found = {t for item in items for t in analyze(item)}
            tokens.extend((number, t, doc_id) for t in found)
