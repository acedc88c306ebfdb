"""The adapters of one running site, built once from settings.

`jip up`, each listener process and the tests build a :class:`Runtime`; HTTP routes
get it through ``app.state`` and DIMSE handlers as bound arguments.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from jip.backends import catalog_engine_for, storage_for
from jip.base.identity import Identity, build_identity
from jip.config import Settings
from jip.migrations import upgrade
from jip.store.catalog import Catalog, DuplicatePolicy
from jip.store.ingest import Ingestor
from jip.store.storage import BlobStorage


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    catalog: Catalog
    storage: BlobStorage
    ingestor: Ingestor
    identity: Identity

    def close(self) -> None:
        self.ingestor.close()
        self.engine.dispose()


def build_runtime(settings: Settings, *, migrate: bool = True) -> Runtime:
    """Adapters for ``settings``; ``migrate`` brings the catalog schema up to date."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    catalog_url = settings.resolved_catalog_url
    if migrate:
        upgrade(catalog_url)
    engine = catalog_engine_for(catalog_url)
    catalog = Catalog(engine)
    storage = storage_for(settings.resolved_storage_url, settings)
    ingestor = Ingestor(storage, catalog, DuplicatePolicy(settings.store.duplicate_policy))
    identity = build_identity(settings, engine)
    return Runtime(settings, engine, catalog, storage, ingestor, identity=identity)
