"""What only the SQLite index has: URLs, WAL, schema upgrades, SQL safety, threads."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from tests.meta.corpus import make_series_docs

from jip.errors import Invalid
from jip.meta.index_sqlite import SqliteIndex
from jip.meta.index_sqlite_query import _glob
from jip.meta.query import parse_query


def _doc(uid: str, **fields: object) -> dict[str, object]:
    return {"SeriesInstanceUID": uid, **fields}


def test_url_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = SqliteIndex.from_url("sqlite:///sub/index.db")
    relative.upsert([_doc("1.1")])
    assert (tmp_path / "sub" / "index.db").exists()
    absolute = SqliteIndex.from_url(f"sqlite:///{tmp_path / 'abs.db'}")
    absolute.upsert([_doc("1.2")])
    assert (tmp_path / "abs.db").exists()
    memory = SqliteIndex.from_url("sqlite://")
    memory.upsert([_doc("1.3")])
    assert memory.count() == 1
    for index in (relative, absolute, memory):
        index.close()
    with pytest.raises(Invalid, match="not a SQLite index URL"):
        SqliteIndex.from_url("postgresql://x/y")


def test_the_file_is_in_wal_mode_and_survives_reopening(tmp_path: Path) -> None:
    index = SqliteIndex(tmp_path / "index.db")
    index.upsert(make_series_docs(20))
    index.close()
    with sqlite3.connect(tmp_path / "index.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    again = SqliteIndex(tmp_path / "index.db")
    assert again.count() == 20
    again.close()


def test_a_changed_catalogue_rebuilds_the_tables_from_the_stored_documents(
    tmp_path: Path,
) -> None:
    docs = make_series_docs(30)
    index = SqliteIndex(tmp_path / "index.db")
    index.upsert(docs)
    index.close()
    with sqlite3.connect(tmp_path / "index.db") as conn:
        conn.execute("UPDATE meta SET value = 'older' WHERE key = 'fingerprint'")
        conn.execute("DROP INDEX ix_docs_Modality")
    rebuilt = SqliteIndex(tmp_path / "index.db")
    assert rebuilt.count() == 30
    ct = [d for d in docs if d["Modality"] == "CT"]
    assert rebuilt.search(parse_query({"term": {"Modality": "CT"}}), limit=100).total == len(ct)
    rebuilt.close()


def test_values_are_bound_never_spliced_into_sql(tmp_path: Path) -> None:
    nasty = "O'Brien\"; DROP TABLE docs; --"
    index = SqliteIndex(tmp_path / "index.db")
    index.upsert([_doc("1.1", InstitutionName=nasty), _doc("1.2", InstitutionName="DKFZ")])
    for query in ({"term": {"InstitutionName": nasty}},
                  {"prefix": {"InstitutionName": "O'Br"}},
                  {"wildcard": {"InstitutionName": "*DROP TABLE*"}},
                  {"terms": {"InstitutionName": [nasty, "x'y"]}}):
        hits = index.search(parse_query(query)).hits
        assert [h["SeriesInstanceUID"] for h in hits] == ["1.1"]
    assert index.count() == 2
    index.close()


def test_wildcard_escapes_and_brackets_are_literal(tmp_path: Path) -> None:
    index = SqliteIndex(tmp_path / "index.db")
    index.upsert([_doc("1", StationName="CT[1]*"), _doc("2", StationName="CT11x")])
    assert index.search(parse_query({"wildcard": {"StationName": "CT[1]\\*"}})).total == 1
    assert index.search(parse_query({"wildcard": {"StationName": "CT?1?*"}})).total == 2
    assert index.search(parse_query({"wildcard": {"StationName": "CT1*"}})).total == 1
    index.close()


def test_glob_translation() -> None:
    assert _glob("a*b?c") == "a*b?c"
    assert _glob("a\\*b\\?c[d]") == "a[*]b[?]c[[]d]"


def test_prefix_works_up_to_the_last_code_point(tmp_path: Path) -> None:
    index = SqliteIndex(tmp_path / "index.db")
    index.upsert([_doc("1", StationName="a\U0010ffffz"), _doc("2", StationName="a\ud7ffz"),
                  _doc("3", StationName="b")])
    assert index.search(parse_query({"prefix": {"StationName": "a\U0010ffff"}})).total == 1
    assert index.search(parse_query({"prefix": {"StationName": "a\ud7ff"}})).total == 1
    assert index.search(parse_query({"prefix": {"StationName": ""}})).total == 3
    index.close()


@pytest.mark.parametrize("where", ["file", "memory"])
def test_searches_run_while_the_indexer_writes(tmp_path: Path, where: str) -> None:
    index = SqliteIndex(tmp_path / "index.db" if where == "file" else ":memory:")
    docs = make_series_docs(600, seed=3)
    index.upsert(docs[:100])
    errors: list[BaseException] = []

    def read() -> None:
        try:
            for _ in range(20):
                total = index.search(parse_query({"term": {"Modality": "CT"}}), limit=1).total
                assert total >= 1
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(3)]
    for thread in readers:
        thread.start()
    for start in range(100, 600, 100):
        index.upsert(docs[start:start + 100])
    for thread in readers:
        thread.join()
    assert not errors
    assert index.count() == 600
    index.close()
