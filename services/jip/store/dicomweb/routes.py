"""DICOMweb (PS3.18) under ``/dicom-web``: the router, deletion and capabilities.

The transactions live in one module each, named after PS3.18: QIDO-RS
(:mod:`jip.store.dicomweb.qido`), WADO-RS (:mod:`jip.store.dicomweb.wado`, rendered
resources in :mod:`jip.store.dicomweb.render`) and STOW-RS
(:mod:`jip.store.dicomweb.stow`). This module assembles them and adds deletion of a
study or series (not a PS3.18 transaction; ``DELETE`` on the resource, as dcm4chee-arc
and Orthanc offer it) and Retrieve Capabilities (§8.9).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from jip.base import CurrentUser, CurrentUserDep, ProjectRole
from jip.errors import Forbidden
from jip.store.catalog.catalog import Catalog
from jip.store.catalog.projects import SeriesProjects
from jip.store.deps import StorageDep
from jip.store.dicom_file import check_uid
from jip.store.dicomweb import capabilities as dicomweb_capabilities
from jip.store.dicomweb.deps import PREFIX, BaseUrlDep, ScopedCatalogDep, SeriesMetadataDep
from jip.store.dicomweb.media_types import JSON, WADL, choose
from jip.store.dicomweb.qido import router as qido_router
from jip.store.dicomweb.render import router as render_router
from jip.store.dicomweb.stow import router as stow_router
from jip.store.dicomweb.targets import accepted, series_instances
from jip.store.dicomweb.wado import router as wado_router
from jip.store.storage.port import BlobStorage

router = APIRouter(prefix=PREFIX)
_own = APIRouter(tags=["dicomweb"])


def _delete_blobs(storage: BlobStorage, keys: list[str]) -> None:
    """Files go after the catalog rows: a crash in between leaves orphan files, which
    nothing serves, never rows that point at missing files."""
    for key in keys:
        storage.delete(key)


def _require_owner(catalog: Catalog, user: CurrentUser, series_uids: list[str]) -> None:
    """Deleting needs the owner role in a project of each series (or a site admin)."""
    if user.is_admin:
        return
    projects = SeriesProjects(catalog.engine).projects_of(series_uids)
    for uid in series_uids:
        if not any(user.has_role(p, ProjectRole.OWNER) for p in projects[uid]):
            raise Forbidden(f"deleting series {uid} needs the owner role in one of its projects")


@_own.delete("/studies/{study}", status_code=204, summary="Delete Study")
def delete_study(
    study: str,
    catalog: ScopedCatalogDep,
    storage: StorageDep,
    cache: SeriesMetadataDep,
    user: CurrentUserDep,
) -> Response:
    """The study's series the caller sees; the whole study only for site admins."""
    uid = check_uid(study, "StudyInstanceUID")
    series = sorted({i.series_instance_uid for i in catalog.instances_of_study(uid)})
    _require_owner(catalog, user, series)
    if catalog.scope is None:
        _delete_blobs(storage, catalog.delete_study(uid))
    else:
        for series_uid in series:
            _delete_blobs(storage, catalog.delete_series(series_uid))
    cache.invalidate(series)
    return Response(status_code=204)


@_own.delete("/studies/{study}/series/{series}", status_code=204, summary="Delete Series")
def delete_series(
    study: str,
    series: str,
    catalog: ScopedCatalogDep,
    storage: StorageDep,
    cache: SeriesMetadataDep,
    user: CurrentUserDep,
) -> Response:
    series_instances(catalog, study, series)  # 404 unless the series is in this study
    _require_owner(catalog, user, [series])
    _delete_blobs(storage, catalog.delete_series(series))
    cache.invalidate([series])
    return Response(status_code=204)


@router.api_route(
    "", methods=["OPTIONS", "GET"], tags=["dicomweb"], summary="Retrieve Capabilities"
)
@router.api_route("/", methods=["OPTIONS", "GET"], include_in_schema=False)
def capabilities(request: Request, base_url: BaseUrlDep) -> Response:
    media = choose(accepted(request), [WADL, JSON, "application/xml"])
    if media.media_type == JSON:
        return JSONResponse(dicomweb_capabilities.as_json(base_url))
    return Response(dicomweb_capabilities.wadl(base_url), media_type=media.media_type)


router.include_router(_own)
router.include_router(qido_router)
router.include_router(stow_router)
router.include_router(wado_router)
router.include_router(render_router)
