"""The adapters of one running site, built once from settings.

`jip up`, each listener process and the tests build a :class:`Runtime`; HTTP routes
get it through ``app.state.runtime`` (each service's ``deps.py`` reads the attributes it
needs through a small Protocol, so no service imports this module) and DIMSE handlers
as bound arguments. Adapters a process may never need (index, result store, workflow
engine) are opened on first use; tests may set them beforehand.
"""

from __future__ import annotations

import stat
import threading
from dataclasses import dataclass, field

from sqlalchemy import Engine

from jip.backends import (
    catalog_engine_for,
    identity_for,
    index_for,
    results_storage_for,
    storage_for,
    workflow_engine_for,
)
from jip.base import Identity
from jip.config import Settings
from jip.db import private_sqlite_file
from jip.flow.engine import WorkflowEngine
from jip.meta.index import MetaIndex
from jip.migrations import upgrade
from jip.store.catalog.catalog import Catalog, DuplicatePolicy
from jip.store.ingest import Ingestor
from jip.store.storage.port import BlobStorage


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    catalog: Catalog
    storage: BlobStorage
    ingestor: Ingestor
    identity: Identity
    _index: MetaIndex | None = field(default=None, repr=False)
    _results: BlobStorage | None = field(default=None, repr=False)
    _workflow_engine: WorkflowEngine | None = field(default=None, repr=False)
    _lazy_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def index(self) -> MetaIndex:
        """The metadata index, opened on first use (listener processes never need it)."""
        with self._lazy_lock:
            if self._index is None:
                self._index = index_for(self.settings.resolved_index_url)
            return self._index

    @property
    def results(self) -> BlobStorage:
        """The result store of workflow runs, opened on first use."""
        with self._lazy_lock:
            if self._results is None:
                self._results = results_storage_for(self.settings)
            return self._results

    @results.setter
    def results(self, storage: BlobStorage) -> None:
        self._results = storage

    @property
    def workflow_engine(self) -> WorkflowEngine:
        """The workflow engine (Airflow's REST API), connected on first use."""
        with self._lazy_lock:
            if self._workflow_engine is None:
                self._workflow_engine = workflow_engine_for(self.settings)
            return self._workflow_engine

    @workflow_engine.setter
    def workflow_engine(self, engine: WorkflowEngine) -> None:
        self._workflow_engine = engine

    def close(self) -> None:
        self.ingestor.close()
        if self._index is not None:
            self._index.close()
        if self._workflow_engine is not None:
            self._workflow_engine.close()
        self.engine.dispose()


def secure_data_dir(settings: Settings) -> None:
    """The data directory 0700 and the files directly in it 0600, created or tightened.

    It holds the catalog and index (PHI, password hashes) with their WAL files, the
    state file and, below it, the signing key and the DICOM files: no other local user
    may read any of it. SQLite files are created 0600 before SQLite opens them, so
    their -wal and -shm files get that mode too.
    """
    data_dir = settings.data_dir
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    for url in (settings.resolved_catalog_url, settings.resolved_index_url):
        private_sqlite_file(url)
    for path in data_dir.iterdir():
        mode = path.lstat().st_mode
        if stat.S_ISREG(mode) and mode & 0o077:
            path.chmod(stat.S_IMODE(mode) & 0o700)


def build_runtime(settings: Settings, *, migrate: bool = True) -> Runtime:
    """Adapters for ``settings``; ``migrate`` brings the catalog schema up to date."""
    secure_data_dir(settings)
    catalog_url = settings.resolved_catalog_url
    if migrate:
        upgrade(catalog_url)
    engine = catalog_engine_for(catalog_url)
    catalog = Catalog(engine, default_project=settings.store.default_project)
    storage = storage_for(settings.resolved_storage_url, settings)
    ingestor = Ingestor(storage, catalog, DuplicatePolicy(settings.store.duplicate_policy))
    identity = identity_for(settings, engine)
    if migrate:
        identity.projects.ensure(
            settings.store.default_project, "Series that no assignment rule matches"
        )
    return Runtime(settings, engine, catalog, storage, ingestor, identity=identity)
