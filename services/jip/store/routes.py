"""Store administration API: counts, ingest conflicts (outside DICOMweb)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from jip.base import AdminDep, CurrentUserDep, project_scope
from jip.store.catalog.projects import as_scope
from jip.store.deps import CatalogDep

router = APIRouter(prefix="/api/store", tags=["store"])


@router.get("/stats")
def stats(catalog: CatalogDep, user: CurrentUserDep) -> dict[str, int]:
    """How many patients, studies, series, instances and conflicts are catalogued (of the
    series the caller may see: counts tell what exists)."""
    return catalog.counts(as_scope(project_scope(user)))


@router.get("/conflicts")
def conflicts(
    catalog: CatalogDep, _admin: AdminDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[dict[str, Any]]:
    """Instances that arrived with a known SOP Instance UID but different bytes (site
    admins only: they name instances of every project)."""
    return catalog.conflicts(limit)
