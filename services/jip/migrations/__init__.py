"""Alembic migrations of the catalog; `upgrade()` brings a database to the newest schema.

Alembic (and the schema modules its environment imports) loads only when something is to
be migrated: a restart of `jip up` first asks whether the database's ``alembic_version``
row is :func:`head_revision`, read from the revision files as text (:func:`is_current`
through SQLAlchemy; an embedded SQLite catalog through sqlite3, :mod:`jip.runtime`).
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

# SQLAlchemy too is imported where used: `jip up` checks an embedded SQLite catalog with
# :func:`head_revision` and the standard library's sqlite3 (jip.runtime.catalog_is_ready).
if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy import Engine

HERE = Path(__file__).parent
_REVISION = re.compile(r"^(down_revision|revision) = (None|\"[^\"]+\")$", re.MULTILINE)
# Any constant works; it only has to be the same in every JIP process.
_MIGRATION_LOCK_ID = 0x4A4950


def alembic_config(url: str) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(HERE))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str) -> None:
    """Create or migrate the catalog at ``url`` to the newest revision (idempotent).

    On PostgreSQL several pods may start at once: a session-level advisory lock makes
    them migrate one after the other (the later ones find nothing to do).
    """
    from alembic import command
    from sqlalchemy import text

    config = alembic_config(url)
    if not url.startswith("postgresql"):
        command.upgrade(config, "head")
        return
    from jip.db import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": _MIGRATION_LOCK_ID})
            try:
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
                connection.commit()
            finally:
                connection.execute(
                    text("SELECT pg_advisory_unlock(:id)"), {"id": _MIGRATION_LOCK_ID}
                )
                connection.commit()
    finally:
        engine.dispose()


@cache
def head_revision() -> str:
    """The newest revision, read from the revision files without importing Alembic.

    The revisions form one line (each names the one before it), so the head is the
    revision no other revision names as its ``down_revision``.
    """
    revisions: set[str] = set()
    downs: set[str] = set()
    for path in (HERE / "versions").glob("*.py"):
        fields = dict(_REVISION.findall(path.read_text()))
        revisions.add(fields["revision"].strip('"'))
        downs.add(fields["down_revision"].strip('"'))
    heads = revisions - downs
    if len(heads) != 1:
        raise RuntimeError(f"the migrations must form one line; heads: {sorted(heads)}")
    return heads.pop()


def is_current(engine: Engine) -> bool:
    """Whether the catalog behind ``engine`` is at :func:`head_revision`: then there is
    nothing to migrate and Alembic need not load. False for a new database, and for one
    that cannot be reached (:func:`upgrade` then says why)."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    try:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    except DBAPIError:  # no alembic_version table (a new database), or none reachable
        return False
    return is_head([row[0] for row in rows])


def is_head(revisions: list[str]) -> bool:
    """Whether the ``version_num`` rows of ``alembic_version`` are exactly the head."""
    return revisions == [head_revision()]
