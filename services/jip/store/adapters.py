"""What store needs of the site's adapters, as a Protocol, so that store never imports the runtime.

The composition builds the adapters once (``jip.runtime.Runtime``, which satisfies
:class:`StoreAdapters` structurally); HTTP routes read them from
``request.app.state.runtime`` (:mod:`jip.store.deps`), DIMSE handlers get them as bound
arguments (:func:`jip.store.dimse.ae.server_handlers`), and each listener process builds
them with the builder the composition hands to :class:`jip.store.dimse.listener.ListenerGroup`.
"""

from __future__ import annotations

from typing import Protocol

from sqlalchemy import Engine

from jip.config import Settings
from jip.store.catalog.catalog import Catalog
from jip.store.ingest import Ingestor
from jip.store.storage.port import BlobStorage


class StoreAdapters(Protocol):
    """The settings and adapters store's routes, handlers and listener read."""

    settings: Settings
    engine: Engine  # the catalog database (DICOM peers added at runtime live there too)
    catalog: Catalog
    storage: BlobStorage
    ingestor: Ingestor


class ClosableStoreAdapters(StoreAdapters, Protocol):
    """Adapters a process built for itself and closes when it stops (a listener process)."""

    def close(self) -> None: ...


class AdaptersBuilder(Protocol):
    """Builds the adapters of one process from settings (``jip.runtime.build_runtime``).

    ``migrate=False``: the process that started it brought the schema up to date.
    """

    def __call__(self, settings: Settings, *, migrate: bool = ...) -> ClosableStoreAdapters: ...
