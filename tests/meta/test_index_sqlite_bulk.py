"""The SQLite index's bulk rebuild (:mod:`jip.meta.index_sqlite_bulk`): the same answers
as upserts on the same corpus, the old contents until it is done, and the old index
intact after a crash half-way."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from tests.meta.corpus import make_series_docs

from jip.errors import Invalid
from jip.meta.aggs import parse_aggs, parse_sort
from jip.meta.index_sqlite import SqliteIndex
from jip.meta.index_sqlite_query import search_page, where_sql
from jip.meta.query import parse_query

ROOT = Path(__file__).resolve().parents[2]
AGGS = {
    "manufacturer": {"terms": {"field": "Manufacturer", "size": 50}},
    "labels": {"terms": {"field": "SegmentLabels", "size": 50}},
    "image_type": {"terms": {"field": "ImageType", "size": 50}},
    "per_year": {"date_histogram": {"field": "StudyDate", "calendar_interval": "year"}},
    "thickness": {"range": {"field": "SliceThickness", "ranges": [{"to": 2}, {"from": 2}]}},
    "patients": {"cardinality": {"field": "PatientID"}},
}
QUERIES: list[dict[str, Any]] = [
    {"match_all": {}},
    {"bool": {"filter": [{"term": {"Modality": "CT"}}, {"range": {"SliceThickness": {"lte": 3}}}]}},
    {"match": {"SeriesDescription": "venous phase"}},
    {"terms": {"SegmentLabels": ["Liver", "Tumor"]}},
    {"bool": {"must_not": [{"exists": {"field": "PatientSex"}}]}},
    {"prefix": {"InstitutionName": "Uni"}},
]


def _answers(index: SqliteIndex) -> list[Any]:
    """Every query's total, hits (as a set, and sorted by a field) and facets."""
    out = []
    for query in QUERIES:
        found = index.search(parse_query(query), limit=10000, aggs=parse_aggs(AGGS))
        ordered = index.search(
            parse_query(query), sort=parse_sort([{"StudyDate": {"order": "desc"}}]), limit=50
        )
        out.append(
            (
                found.total,
                sorted(h["SeriesInstanceUID"] for h in found.hits),
                [h["SeriesInstanceUID"] for h in ordered.hits],
                found.aggregations,
            )
        )
    return out


def _sql_answers(path: Path) -> list[Any]:
    """The same by SQL over the tables alone (the path of a snapshot older than the
    column cache), so that the rebuilt value and token tables are checked too."""
    out = []
    with closing(sqlite3.connect(path)) as conn:
        for query in QUERIES:
            params: list[Any] = []
            where = where_sql(parse_query(query), params)
            found = search_page(conn, where, params, (), 0, 10000, parse_aggs(AGGS), None)
            uids = sorted(h["SeriesInstanceUID"] for h in found.hits)
            out.append((found.total, uids, found.aggregations))
    return out


def test_a_rebuild_answers_as_upserts_do(tmp_path: Path) -> None:
    docs = make_series_docs(900, seed=11)
    changed = {**docs[5], "Modality": "MR", "SeriesDescription": "T2 FLAIR again"}
    stream = [*docs, changed]  # a repeated SeriesInstanceUID: the later one counts
    upserted = SqliteIndex(tmp_path / "upserted.db")
    for start in range(0, len(stream), 100):
        upserted.upsert(stream[start : start + 100])
    rebuilt = SqliteIndex(tmp_path / "rebuilt.db")
    rebuilt.upsert(make_series_docs(50, seed=12))  # replaced by the rebuild
    seen: list[int] = []
    assert rebuilt.rebuild(iter(stream), progress=seen.append) == len(docs)
    assert seen and seen[-1] == len(stream)
    assert rebuilt.count() == upserted.count() == len(docs)
    assert _answers(rebuilt) == _answers(upserted)
    assert _sql_answers(tmp_path / "rebuilt.db") == _sql_answers(tmp_path / "upserted.db")
    # incremental writes go on on the rebuilt tables (unique SeriesInstanceUID kept)
    again = {**docs[7], "Manufacturer": "ACME"}
    rebuilt.upsert([again])
    upserted.upsert([again])
    assert rebuilt.count() == len(docs)
    assert _answers(rebuilt) == _answers(upserted)
    with (
        closing(sqlite3.connect(tmp_path / "rebuilt.db")) as conn,
        pytest.raises(sqlite3.IntegrityError),
    ):
        conn.execute(
            'INSERT INTO docs (id, "SeriesInstanceUID") VALUES (?, ?)',
            (10**6, docs[0]["SeriesInstanceUID"]),
        )
    for index in (rebuilt, upserted):
        index.close()


def test_searches_see_the_old_contents_until_the_rebuild_is_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("jip.meta.index_sqlite_bulk.BATCH", 40)
    old, new = make_series_docs(60, seed=13), make_series_docs(200, seed=14)
    index, other = SqliteIndex(tmp_path / "i.db"), SqliteIndex(tmp_path / "i.db")
    index.upsert(old)
    before = _answers(other)  # the other process's columns are loaded here
    during: list[list[Any]] = []
    index.rebuild(new, progress=lambda _: during.append(_answers(other)))
    assert len(during) == 5 and all(seen == before for seen in during)
    expected = SqliteIndex(tmp_path / "expected.db")
    expected.upsert(new)
    assert _answers(other) == _answers(expected)  # a new epoch: the columns reload
    for each in (index, other, expected):
        each.close()


def test_a_rebuild_that_fails_half_way_leaves_the_old_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("jip.meta.index_sqlite_bulk.BATCH", 30)
    index = SqliteIndex(tmp_path / "i.db")
    index.upsert(make_series_docs(80, seed=15))
    before = _answers(index)
    bad = [*make_series_docs(70, seed=16), {"SeriesInstanceUID": "1.2", "Rows": "many"}]
    with pytest.raises(Invalid, match="Rows"):
        index.rebuild(bad)
    assert _answers(index) == before
    with closing(sqlite3.connect(tmp_path / "i.db")) as conn:  # the staged rows are dropped
        assert not conn.execute(
            "SELECT name FROM sqlite_master WHERE name = 'docs_stage'"
        ).fetchall()
    index.close()


_CRASH = """
import os, signal, sys
sys.path[:0] = [{services!r}, {root!r}]
import jip.meta.index_sqlite_bulk as bulk
from jip.meta.index_sqlite import SqliteIndex
from tests.meta.corpus import make_series_docs
bulk.BATCH = 25
def docs():
    for number, doc in enumerate(make_series_docs(200, seed=17)):
        if number == 120:  # three batches staged and committed: the power goes
            os.kill(os.getpid(), signal.SIGKILL)
        yield doc
SqliteIndex({path!r}).rebuild(docs())
"""


def _killed_rebuild(path: Path) -> int:
    script = _CRASH.format(services=str(ROOT / "services"), root=str(ROOT), path=str(path))
    return subprocess.run([sys.executable, "-c", script], check=False, timeout=120).returncode


def test_a_rebuild_killed_half_way_leaves_the_old_index_and_the_next_one_works(
    tmp_path: Path,
) -> None:
    old = make_series_docs(90, seed=18)
    index = SqliteIndex(tmp_path / "i.db")
    index.upsert(old)
    before = _answers(index)
    index.close()
    assert _killed_rebuild(tmp_path / "i.db") == -signal.SIGKILL
    with closing(sqlite3.connect(tmp_path / "i.db")) as conn:  # what the dead rebuild staged
        assert conn.execute("SELECT COUNT(*) FROM docs_stage").fetchone()[0] == 100
    reopened = SqliteIndex(tmp_path / "i.db")
    assert reopened.count() == len(old)
    assert _answers(reopened) == before
    new = make_series_docs(150, seed=19)
    assert reopened.rebuild(new) == len(new)
    expected = SqliteIndex(tmp_path / "expected.db")
    expected.upsert(new)
    assert _answers(reopened) == _answers(expected)
    with closing(sqlite3.connect(tmp_path / "i.db")) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert not {n for n in names if "stage" in n and not n.startswith(("ux_", "ix_"))}
    for each in (reopened, expected):
        each.close()


def test_an_empty_rebuild_empties_the_index(tmp_path: Path) -> None:
    index = SqliteIndex(tmp_path / "i.db")
    index.upsert(make_series_docs(30, seed=20))
    assert index.rebuild([]) == 0
    assert index.count() == 0
    assert index.search(parse_query({"match_all": {}}), aggs=parse_aggs(AGGS)).total == 0
    index.upsert(make_series_docs(10, seed=21))
    assert index.count() == 10
    index.close()
