"""The adapters of one running site, built once from settings.

`jip up`, each listener process and the tests build a :class:`Runtime`; HTTP routes
get it through ``app.state.runtime`` (each service's ``deps.py`` reads the attributes it
needs through a small Protocol, so no service imports this module) and DIMSE handlers
as bound arguments. Adapters a process may never need (index, result store, workflow
engine) are opened on first use; tests may set them beforehand.

A DICOM listener process builds only a :class:`StoreRuntime` (catalog, blob storage,
ingest) and imports nothing else of the platform: identity, the index and the workflow
engine are imported where they are built, so that a listener answers within a second of
a restart. :func:`recover` is what must hold before any process acknowledges an
instance; after a restart it is a cheap check (:func:`catalog_is_ready`; no SQLAlchemy
for the embedded SQLite catalog).
"""

from __future__ import annotations

import contextlib
import stat
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from jip.config import Settings

# Everything else is imported where it is used: `jip up` imports this module for the
# listener's builder before it starts the listener processes, and should spend no time
# on it then.
if TYPE_CHECKING:
    from pathlib import Path

    from sqlalchemy import Engine

    from jip.base import Identity
    from jip.flow.engine import WorkflowEngine
    from jip.meta.index import MetaIndex
    from jip.store.catalog.catalog import Catalog
    from jip.store.ingest import Ingestor
    from jip.store.storage.port import BlobStorage


@dataclass
class StoreRuntime:
    """What a DICOM listener process serves with (:class:`jip.store.adapters.StoreAdapters`)."""

    settings: Settings
    engine: Engine
    catalog: Catalog
    storage: BlobStorage
    ingestor: Ingestor

    def close(self) -> None:
        self.ingestor.close()
        self.engine.dispose()


@dataclass
class Runtime(StoreRuntime):
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
                from jip.backends import index_for

                self._index = index_for(self.settings.resolved_index_url)
            return self._index

    @property
    def results(self) -> BlobStorage:
        """The result store of workflow runs, opened on first use."""
        with self._lazy_lock:
            if self._results is None:
                from jip.backends import results_storage_for

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
                from jip.backends import workflow_engine_for

                self._workflow_engine = workflow_engine_for(self.settings)
            return self._workflow_engine

    @workflow_engine.setter
    def workflow_engine(self, engine: WorkflowEngine) -> None:
        self._workflow_engine = engine

    def close(self) -> None:
        if self._index is not None:
            self._index.close()
        if self._workflow_engine is not None:
            self._workflow_engine.close()
        super().close()


def secure_data_dir(settings: Settings) -> None:
    """The data directory 0700 and the files directly in it 0600, created or tightened.

    It holds the catalog and index (PHI, password hashes) with their WAL files, the
    state file and, below it, the signing key and the DICOM files: no other local user
    may read any of it. SQLite files are created 0600 before SQLite opens them, so
    their -wal and -shm files get that mode too.
    """
    from jip.sqlite_files import private_sqlite_file

    data_dir = settings.data_dir
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    for url in (settings.resolved_catalog_url, settings.resolved_index_url):
        private_sqlite_file(url)
    for path in data_dir.iterdir():
        mode = path.lstat().st_mode
        if stat.S_ISREG(mode) and mode & 0o077:
            path.chmod(stat.S_IMODE(mode) & 0o700)


def recover(settings: Settings) -> None:
    """What must hold before any process acknowledges an instance: the data directory
    private, the catalog at the newest schema (SQLite rolls back or replays its WAL on
    open) and the default project present.

    After a restart all of that usually holds already: :func:`catalog_is_ready` says so
    with two queries, and Alembic and the identity tables' code load only when something
    is to be done.
    """
    secure_data_dir(settings)
    if not catalog_is_ready(settings):
        build_runtime(settings).close()  # migrates and creates the default project


def catalog_is_ready(settings: Settings) -> bool:
    """Whether the catalog is at :func:`jip.migrations.head_revision` and holds the
    default project. False for a new or older catalog, and for one that cannot be read
    (the full recovery then migrates, or says why it cannot).

    An embedded SQLite catalog is asked through the standard library's sqlite3: `jip up`
    asks before its DICOM listener may serve, and SQLAlchemy would take longer to import
    than the two queries take (it loads once the listener accepts). PostgreSQL is asked
    through SQLAlchemy.
    """
    from jip.sqlite_files import sqlite_file

    path = sqlite_file(settings.resolved_catalog_url)
    if path is not None:
        return _sqlite_catalog_is_ready(path, settings.store.default_project)
    from jip.backends import catalog_engine_for
    from jip.migrations import is_current

    engine = catalog_engine_for(settings.resolved_catalog_url)
    try:
        return is_current(engine) and _has_project(engine, settings.store.default_project)
    finally:
        engine.dispose()


def _sqlite_catalog_is_ready(path: Path, project: str) -> bool:
    import sqlite3

    from jip.migrations import is_head

    if not path.is_file():
        return False
    try:  # the busy timeout of jip.db.make_engine: a crashed writer's lock is released
        with contextlib.closing(sqlite3.connect(path, timeout=60)) as db:
            revisions = [row[0] for row in db.execute("SELECT version_num FROM alembic_version")]
            # The table of jip.base.Project, named here so that the check needs no ORM.
            found = db.execute("SELECT 1 FROM projects WHERE name = ?", (project,)).fetchone()
    except sqlite3.Error:  # no schema yet (a new catalog), or one that cannot be read
        return False
    return is_head(revisions) and found is not None


def _has_project(engine: Engine, name: str) -> bool:
    from sqlalchemy import select

    from jip.base import Project

    with engine.connect() as connection:
        return (
            connection.execute(select(Project.name).where(Project.name == name)).first() is not None
        )


def build_store_runtime(settings: Settings, *, migrate: bool = False) -> StoreRuntime:
    """The catalog, blob storage and ingest of one listener process (a
    :class:`jip.store.adapters.AdaptersBuilder`); ``migrate``: :func:`recover` first."""
    from jip.backends import catalog_engine_for, storage_for
    from jip.store.catalog.catalog import Catalog, DuplicatePolicy
    from jip.store.ingest import Ingestor

    if migrate:
        recover(settings)
    engine = catalog_engine_for(settings.resolved_catalog_url)
    catalog = Catalog(engine, default_project=settings.store.default_project)
    storage = storage_for(settings.resolved_storage_url, settings)
    ingestor = Ingestor(storage, catalog, DuplicatePolicy(settings.store.duplicate_policy))
    return StoreRuntime(settings, engine, catalog, storage, ingestor)


def build_runtime(settings: Settings, *, migrate: bool = True) -> Runtime:
    """Adapters for ``settings``; ``migrate`` brings the catalog schema up to date."""
    from jip.backends import identity_for
    from jip.migrations import upgrade

    secure_data_dir(settings)
    if migrate:
        upgrade(settings.resolved_catalog_url)
    store = build_store_runtime(settings)
    identity = identity_for(settings, store.engine)
    if migrate:
        identity.projects.ensure(
            settings.store.default_project, "Series that no assignment rule matches"
        )
    return Runtime(
        settings, store.engine, store.catalog, store.storage, store.ingestor, identity=identity
    )
