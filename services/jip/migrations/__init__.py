"""Alembic migrations of the catalog; `upgrade()` brings a database to the newest schema."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text

HERE = Path(__file__).parent
# Any constant works; it only has to be the same in every JIP process.
_MIGRATION_LOCK_ID = 0x4A4950


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(HERE))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str) -> None:
    """Create or migrate the catalog at ``url`` to the newest revision (idempotent).

    On PostgreSQL several pods may start at once: a session-level advisory lock makes
    them migrate one after the other (the later ones find nothing to do).
    """
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
