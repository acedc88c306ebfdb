"""Typed dependencies of the store routes (FastAPI ``Annotated`` aliases)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from jip.config import Settings
from jip.runtime import Runtime
from jip.store.catalog.catalog import Catalog
from jip.store.ingest import Ingestor
from jip.store.storage.port import BlobStorage


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def get_catalog(request: Request) -> Catalog:
    return get_runtime(request).catalog


def get_storage(request: Request) -> BlobStorage:
    return get_runtime(request).storage


def get_ingestor(request: Request) -> Ingestor:
    return get_runtime(request).ingestor


def get_settings_dep(request: Request) -> Settings:
    return get_runtime(request).settings


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
CatalogDep = Annotated[Catalog, Depends(get_catalog)]
StorageDep = Annotated[BlobStorage, Depends(get_storage)]
IngestorDep = Annotated[Ingestor, Depends(get_ingestor)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
