"""Alembic environment: migrates the catalog at the URL given by `jip.migrations.upgrade`."""

from __future__ import annotations

from alembic import context

import jip.base.schema  # registers the identity tables on Base.metadata
import jip.federation.site.schema  # registers the federation site tables on Base.metadata
import jip.flow.schema  # registers the flow tables on Base.metadata
import jip.meta.schema  # registers the meta tables on Base.metadata
import jip.store.catalog.tables  # noqa: F401  (registers the tables on Base.metadata)
from jip.db import Base, make_engine

config = context.config
url = config.get_main_option("sqlalchemy.url")
assert url, "jip.migrations.upgrade sets sqlalchemy.url"

connectable = config.attributes.get("connection")
if connectable is None:
    engine = make_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection, target_metadata=Base.metadata, render_as_batch=True
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
else:
    context.configure(connection=connectable, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
