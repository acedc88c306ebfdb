"""The file behind a sqlite:/// URL, read without SQLAlchemy as SQLAlchemy reads it."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from jip.sqlite_files import private_sqlite_file, sqlite_file


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:////srv/jip/catalog.db",
        "sqlite:///relative/catalog.db",
        "sqlite:///with%20percent.db",
        "sqlite+pysqlite:////srv/jip/catalog.db",
        "sqlite:////srv/jip/catalog.db?timeout=30",
    ],
)
def test_the_database_file_is_the_one_sqlalchemy_opens(url: str) -> None:
    assert sqlite_file(url) == Path(str(make_url(url).database))


@pytest.mark.parametrize(
    "url",
    ["sqlite://", "sqlite:///:memory:", "sqlite:///file:catalog?mode=memory&uri=true", "postgresql://jip@db/jip"],
)  # fmt: skip
def test_no_file_for_memory_uri_or_another_database(url: str) -> None:
    assert sqlite_file(url) is None


def test_the_file_is_created_private(tmp_path: Path) -> None:
    private_sqlite_file(f"sqlite:///{tmp_path}/new/catalog.db")
    mode = (tmp_path / "new" / "catalog.db").stat().st_mode
    assert stat.S_IMODE(mode) == 0o600
