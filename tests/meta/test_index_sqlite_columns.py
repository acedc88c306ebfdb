"""The SQLite index's columnar cache stays the index's own answer: writes from another
process (another SqliteIndex on the same file), deletions, clears, a pruned change log
and older snapshots never show stale hits, totals or facets."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from tests.meta import reference
from tests.meta.corpus import make_series_docs

import jip.meta.index_sqlite as index_sqlite
from jip.meta.aggs import parse_aggs, parse_sort
from jip.meta.index_sqlite import SqliteIndex
from jip.meta.index_sqlite_columns import ColumnCache
from jip.meta.query import parse_query

QUERY = {
    "bool": {
        "filter": [{"term": {"Modality": "CT"}}],
        "must_not": [{"match": {"SeriesDescription": "phase"}}],
    }
}
AGGS = {
    "manufacturer": {"terms": {"field": "Manufacturer", "size": 20}},
    "labels": {"terms": {"field": "SegmentLabels", "size": 20}},
    "per_year": {"date_histogram": {"field": "StudyDate", "calendar_interval": "year"}},
}


def _answer(index: SqliteIndex, query: dict[str, Any] = QUERY) -> tuple[Any, ...]:
    found = index.search(parse_query(query), limit=10000, aggs=parse_aggs(AGGS))
    uids = sorted(h["SeriesInstanceUID"] for h in found.hits)
    return found.total, uids, found.aggregations["manufacturer"], found.aggregations["labels"]


def _expected(docs: list[dict[str, Any]], query: dict[str, Any] = QUERY) -> tuple[Any, ...]:
    matched = reference.search(docs, query)
    uids = sorted(d["SeriesInstanceUID"] for d in matched)
    manufacturers = reference.terms(matched, "Manufacturer", 20)
    return len(matched), uids, manufacturers, reference.terms(matched, "SegmentLabels", 20)


def _apply(current: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return list(current.values())


def test_writes_by_another_index_on_the_file_show_in_the_next_search(tmp_path: Path) -> None:
    docs = make_series_docs(300, seed=3)
    writer, reader = SqliteIndex(tmp_path / "i.db"), SqliteIndex(tmp_path / "i.db")
    writer.upsert(docs[:200])
    assert _answer(reader) == _expected(docs[:200])  # columns loaded here
    current = {d["SeriesInstanceUID"]: d for d in docs[:200]}
    writer.upsert(docs[200:])
    changed = {**docs[0], "Modality": "MR" if docs[0]["Modality"] == "CT" else "CT"}
    writer.upsert([changed])
    writer.delete([docs[1]["SeriesInstanceUID"], docs[250]["SeriesInstanceUID"]])
    current.update({d["SeriesInstanceUID"]: d for d in docs[200:]})
    current[changed["SeriesInstanceUID"]] = changed
    for gone in (docs[1], docs[250]):
        del current[gone["SeriesInstanceUID"]]
    assert _answer(reader) == _expected(_apply(current))
    writer.clear()
    assert _answer(reader) == (0, [], _expected([])[2], _expected([])[3])
    writer.close()
    reader.close()


def test_a_cache_behind_the_pruned_change_log_reloads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(index_sqlite, "_KEEP_GENERATIONS", 2)
    docs = make_series_docs(120, seed=4)
    writer, reader = SqliteIndex(tmp_path / "i.db"), SqliteIndex(tmp_path / "i.db")
    writer.upsert(docs[:20])
    assert _answer(reader) == _expected(docs[:20])
    for start in range(20, 120, 20):  # five generations: the log forgets the first ones
        writer.upsert(docs[start : start + 20])
    with sqlite3.connect(tmp_path / "i.db") as conn:
        assert conn.execute("SELECT MIN(rev) FROM changes").fetchone()[0] > 2
    assert _answer(reader) == _expected(docs)
    writer.close()
    reader.close()


def test_a_snapshot_older_than_the_cache_is_left_to_sql(tmp_path: Path) -> None:
    docs = make_series_docs(40, seed=5)
    index = SqliteIndex(tmp_path / "i.db")
    index.upsert(docs[:20])
    old = sqlite3.connect(tmp_path / "i.db", isolation_level=None)
    old.execute("BEGIN")
    old.execute("SELECT COUNT(*) FROM docs").fetchone()  # the snapshot starts here
    index.upsert(docs[20:])
    cache = ColumnCache()
    query, aggs = parse_query(QUERY), parse_aggs(AGGS)
    fresh = sqlite3.connect(tmp_path / "i.db")
    assert cache.search(fresh, query, aggs) is not None  # the cache is at the newer state
    assert cache.search(old, query, aggs) is None
    old.execute("COMMIT")
    for conn in (old, fresh):
        conn.close()
    index.close()


def test_a_sorted_page_is_sorted_over_every_match(tmp_path: Path) -> None:
    docs = make_series_docs(200, seed=6)
    index = SqliteIndex(tmp_path / "i.db")
    index.upsert(docs)
    query = {"term": {"Modality": "CT"}}
    found = index.search(
        parse_query(query), parse_sort([{"StudyDate": "desc"}]), offset=5, limit=20
    )
    ordered = reference.sort(reference.search(docs, query), "StudyDate", True)
    assert [h["SeriesInstanceUID"] for h in found.hits] == ordered[5:25]
    assert found.total == len(reference.search(docs, query))
    index.close()


def test_writes_by_another_index_show_when_only_single_valued_columns_are_cached(
    tmp_path: Path,
) -> None:
    """The cache then reads the changed rows' columns, not their JSON sources: the same
    answers, booleans, missing values and ranges over many distinct values included."""
    query = {
        "bool": {
            "filter": [{"range": {"StudyDate": {"gte": "2012-01-01"}}}],
            "must_not": [{"terms": {"Modality": ["PT", "SEG"]}}],
        }
    }
    aggs = {
        "manufacturer": {"terms": {"field": "Manufacturer", "size": 20}},
        "contrast": {"terms": {"field": "Contrast", "size": 5}},
        "thickness": {"range": {"field": "SliceThickness", "ranges": [{"to": 2}, {"from": 2}]}},
    }

    def answer(index: SqliteIndex) -> tuple[Any, ...]:
        found = index.search(parse_query(query), limit=10000, aggs=parse_aggs(aggs))
        uids = sorted(h["SeriesInstanceUID"] for h in found.hits)
        return found.total, uids, found.aggregations

    docs = make_series_docs(400, seed=8)
    writer, reader = SqliteIndex(tmp_path / "i.db"), SqliteIndex(tmp_path / "i.db")
    expected = SqliteIndex(tmp_path / "expected.db")
    writer.upsert(docs[:250])
    expected.upsert(docs[:250])
    reader.search(parse_query(query), limit=0, aggs=parse_aggs(aggs))  # columns loaded
    flipped = {**docs[3], "Contrast": not docs[3].get("Contrast", False), "Manufacturer": "X"}
    emptied = {k: v for k, v in docs[4].items() if k not in ("Manufacturer", "StudyDate")}
    for index in (writer, expected):
        index.upsert(docs[250:])
        index.upsert([flipped, emptied])
        index.delete([docs[9]["SeriesInstanceUID"]])
    assert answer(reader) == answer(expected)
    total, uids, _ = answer(reader)
    current = {d["SeriesInstanceUID"]: d for d in [*docs, flipped, emptied]}
    del current[docs[9]["SeriesInstanceUID"]]
    matched = reference.search(list(current.values()), query)
    assert (total, uids) == (len(matched), sorted(d["SeriesInstanceUID"] for d in matched))
    for index in (writer, reader, expected):
        index.close()
