"""The file behind a ``sqlite:///`` URL, created private, without importing SQLAlchemy.

`jip up` secures its data directory and checks its catalog before its DICOM listener
may serve (:func:`jip.runtime.recover`); for the embedded SQLite catalog that needs
neither SQLAlchemy nor its URL parser, which load only for an unusual URL.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

# What SQLAlchemy's make_url makes of the common form: the rest of the URL, as written,
# is the database (sqlite:///rel.db -> rel.db, sqlite:////abs.db -> /abs.db).
_PLAIN = re.compile(r"sqlite(?:\+pysqlite)?:///([^?]*)")


def sqlite_file(url: str) -> Path | None:
    """The database file of a ``sqlite:///path`` URL; None for another database, an
    in-memory one or a URI filename (``file:...``)."""
    if not url.startswith("sqlite"):
        return None
    plain = _PLAIN.fullmatch(url)
    if plain is not None:
        database: str | None = plain[1]
    else:  # query parameters, another driver: as SQLAlchemy reads it
        from sqlalchemy.engine import make_url

        database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def private_sqlite_file(url: str) -> None:
    """Create the database file of a ``sqlite:///`` URL readable by its owner only (0600).

    SQLite gives the -wal and -shm files it makes later the mode of the database file,
    so catalog rows, password hashes and PHI in the WAL stay private too. An existing
    file keeps its mode (``jip.runtime`` tightens the data directory's files on start).
    """
    path = sqlite_file(url)
    if path is None:
        return
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
