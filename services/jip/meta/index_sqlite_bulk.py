"""Rebuilding the SQLite index in bulk: every document at once, at more than 10,000
series/s, while searches go on against the old contents.

Incremental upserts (:meth:`jip.meta.index_sqlite.SqliteIndex.upsert`) pay for a
B-tree insert per row in three places that a whole-index load can defer: the unique
index on SeriesInstanceUID (random UIDs, a random page each) and the primary keys of
``doc_values`` and ``doc_tokens`` (ordered by field and value, not by document).
A rebuild instead

1. fills staged copies of the tables (suffix ``_stage``) in batches, each its own short
   transaction, so that other writers and the WAL checkpoints go on between them: the
   documents in id order (appends), value and token rows into heaps in memory;
2. then, in one more transaction, sorts the heaps into the ``WITHOUT ROWID`` tables and
   builds ``docs``' indexes, each by one sort;
3. and swaps the staged tables in, in one short transaction that also starts a new
   epoch, so that every process's column cache reloads.

Search sees the old contents until the swap commits and the new ones after, never a
mixture. A crash before the swap leaves the old index as it was; the staged tables it
leaves behind are dropped by the next rebuild. Writes by others during a rebuild go to
the old tables and are replaced by the rebuilt contents at the swap: the caller rebuilds
from the source of truth (the catalog's summaries) and runs the indexer after it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, suppress
from itertools import islice
from typing import Any

from jip.meta.fields import ID_FIELD, normalize_document
from jip.meta.index_sqlite_schema import (
    INSERT_DOC,
    SideRow,
    create_tables,
    doc_row,
    index_docs,
    new_epoch,
    side_rows,
    source,
)

Staged = tuple[list[list[Any]], list[tuple[int, str]], list[SideRow], list[SideRow]]
Writer = Callable[[], AbstractContextManager[sqlite3.Connection]]
STAGE = "_stage"
TABLES = ("docs", "sources", "doc_values", "doc_tokens")
# Value and token rows wait here, in memory (temp_store=MEMORY), until one sort each.
_HEAPS = {"doc_values": "temp.values_heap", "doc_tokens": "temp.tokens_heap"}
BATCH = 20_000  # documents per staging transaction


def rebuild(
    write: Writer,
    docs: Iterable[Mapping[str, Any]],
    progress: Callable[[int], None] | None = None,
) -> int:
    """Replace the whole index with ``docs`` (checked as upserts check them; a later
    document with the same SeriesInstanceUID replaces an earlier one); returns how many
    documents the index holds afterwards. ``progress`` gets the documents written so far
    after each batch. ``write`` opens a write transaction on the index's file."""
    with write() as conn:
        drop_staged(conn)
        create_tables(conn, STAGE, indexed=False)
        for heap in _HEAPS.values():
            conn.execute(f"CREATE TABLE {heap} (field INTEGER, value, doc_id INTEGER)")
    try:
        return _load(write, iter(docs), progress)
    except BaseException:
        with suppress(sqlite3.Error), write() as conn:  # the old index stays; free the space
            drop_staged(conn)
        raise


def _load(
    write: Writer, stream: Iterator[Mapping[str, Any]], progress: Callable[[int], None] | None
) -> int:
    """Stage, finish and swap in (the steps of :func:`rebuild` after the tables exist)."""
    ids: dict[str, int] = {}
    replaced: set[int] = set()
    done = 0
    # Rows are built outside the transaction (no thread beside it: SQLite's inserts take
    # the GIL for every row, and a builder thread holding it would stall each of them).
    while chunk := list(islice(stream, BATCH)):
        rows, sources, values, tokens = _stage_rows(chunk, ids, replaced)
        with write() as conn:
            conn.executemany(INSERT_DOC.format(table=f"docs{STAGE}"), rows)
            conn.executemany(f"INSERT OR REPLACE INTO sources{STAGE} VALUES (?, ?)", sources)
            conn.executemany(f"INSERT INTO {_HEAPS['doc_values']} VALUES (?, ?, ?)", values)
            conn.executemany(f"INSERT INTO {_HEAPS['doc_tokens']} VALUES (?, ?, ?)", tokens)
        done += len(rows)
        if progress is not None:
            progress(done)
    with write() as conn:
        _finish(conn, replaced)
    with write() as conn:
        _swap(conn)
    return len(ids)


def drop_staged(conn: sqlite3.Connection) -> None:
    """Remove what an unfinished rebuild left (inside the caller's write transaction)."""
    for table in (*(f"{t}{STAGE}" for t in TABLES), *_HEAPS.values()):
        conn.execute(f"DROP TABLE IF EXISTS {table}")


def _stage_rows(chunk: list[Mapping[str, Any]], ids: dict[str, int], replaced: set[int]) -> Staged:
    """The rows of one batch, built outside any transaction. Ids follow the order of
    first appearance (the index's order, as with upserts); a repeated SeriesInstanceUID
    keeps its first id, and its value rows are rebuilt from the last source at the end."""
    rows: list[list[Any]] = []
    sources: list[tuple[int, str]] = []
    values: list[SideRow] = []
    tokens: list[SideRow] = []
    for doc in map(normalize_document, chunk):
        uid = doc[ID_FIELD]
        doc_id = ids.get(uid)
        if doc_id is None:
            doc_id = ids[uid] = len(ids) + 1
        else:
            replaced.add(doc_id)
        rows.append(doc_row(doc_id, uid, doc))
        sources.append((doc_id, source(doc)))
        side_rows(doc_id, doc, values, tokens)
    return rows, sources, values, tokens


def _finish(conn: sqlite3.Connection, replaced: set[int]) -> None:
    """Sort the heaps into the staged value and token tables and index ``docs``."""
    if replaced:  # only the last document of a repeated SeriesInstanceUID counts
        listed = json.dumps(sorted(replaced))
        for heap in _HEAPS.values():
            conn.execute(
                f"DELETE FROM {heap} WHERE doc_id IN (SELECT value FROM json_each(?))", (listed,)
            )
        values: list[SideRow] = []
        tokens: list[SideRow] = []
        for doc_id, doc in conn.execute(
            f"SELECT id, doc FROM sources{STAGE} WHERE id IN (SELECT value FROM json_each(?))",
            (listed,),
        ):
            side_rows(doc_id, json.loads(doc), values, tokens)
        for table, rows in (("doc_values", values), ("doc_tokens", tokens)):
            conn.executemany(f"INSERT INTO {_HEAPS[table]} VALUES (?, ?, ?)", rows)
    for table, heap in _HEAPS.items():
        conn.execute(
            f"INSERT OR IGNORE INTO {table}{STAGE} SELECT field, value, doc_id FROM {heap} "
            "ORDER BY 1, 2, 3"
        )
        conn.execute(f"DROP TABLE {heap}")
    index_docs(conn, STAGE, unique=True)


def _swap(conn: sqlite3.Connection) -> None:
    """The staged tables become the index, in one transaction."""
    for table in TABLES:
        conn.execute(f"DROP TABLE {table}")
    for table in TABLES:
        conn.execute(f"ALTER TABLE {table}{STAGE} RENAME TO {table}")
    conn.execute("DELETE FROM changes")
    new_epoch(conn)
