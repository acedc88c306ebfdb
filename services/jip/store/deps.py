"""Typed dependencies of the store routes (FastAPI ``Annotated`` aliases).

The adapters come from ``request.app.state.runtime``, read through the
:class:`~jip.store.adapters.StoreAdapters` Protocol: store never imports the runtime.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from jip.config import Settings
from jip.store.adapters import StoreAdapters
from jip.store.catalog.catalog import Catalog
from jip.store.ingest import Ingestor
from jip.store.storage.port import BlobStorage


def get_adapters(request: Request) -> StoreAdapters:
    adapters: StoreAdapters = request.app.state.runtime
    return adapters


def get_catalog(request: Request) -> Catalog:
    return get_adapters(request).catalog


def get_storage(request: Request) -> BlobStorage:
    return get_adapters(request).storage


def get_ingestor(request: Request) -> Ingestor:
    return get_adapters(request).ingestor


def get_settings_dep(request: Request) -> Settings:
    return get_adapters(request).settings


AdaptersDep = Annotated[StoreAdapters, Depends(get_adapters)]
CatalogDep = Annotated[Catalog, Depends(get_catalog)]
StorageDep = Annotated[BlobStorage, Depends(get_storage)]
IngestorDep = Annotated[Ingestor, Depends(get_ingestor)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
