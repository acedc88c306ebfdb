"""DICOMweb (PS3.18) under ``/dicom-web``: the router, deletion and capabilities.

The transactions live in one module each, named after PS3.18: QIDO-RS
(:mod:`jip.store.dicomweb.qido`), WADO-RS (:mod:`jip.store.dicomweb.wado`, rendered
resources in :mod:`jip.store.dicomweb.render`) and STOW-RS
(:mod:`jip.store.dicomweb.stow`). This module assembles them and adds deletion of a
study or series (not a PS3.18 transaction; ``DELETE`` on the resource, as dcm4chee-arc
and Orthanc offer it) and Retrieve Capabilities (§8.9). A series shared by several
projects is deleted only by an owner of all of them; an owner of some removes it from
those (:mod:`jip.store.catalog.deletion`).
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


def _owned(user: CurrentUser) -> frozenset[str] | None:
    """The projects the caller deletes from (owner role); None: everywhere (site admins,
    and every caller while authentication is off)."""
    if user.is_admin:
        return None
    return frozenset(p for p, role in user.projects.items() if role.at_least(ProjectRole.OWNER))


def _require_owner(catalog: Catalog, user: CurrentUser, series_uids: list[str]) -> None:
    """Deleting needs the owner role in a project of each series (or a site admin): checked
    for all series before any is touched."""
    owned = _owned(user)
    if owned is None:
        return
    projects = SeriesProjects(catalog.engine).projects_of(series_uids)
    for uid in series_uids:
        if not projects[uid] & owned:
            raise Forbidden(f"deleting series {uid} needs the owner role in one of its projects")


def _delete(
    catalog: Catalog, storage: BlobStorage, user: CurrentUser, series_uids: list[str]
) -> None:
    """Each series leaves the caller's owned projects; it is deleted (rows, then files)
    only where no other project holds it (:func:`jip.store.catalog.deletion.delete_series_of`)."""
    owned = _owned(user)
    for uid in series_uids:
        _delete_blobs(storage, catalog.delete_series_of(uid, owned))


@_own.delete("/studies/{study}", status_code=204, summary="Delete Study")
def delete_study(
    study: str,
    catalog: ScopedCatalogDep,
    storage: StorageDep,
    cache: SeriesMetadataDep,
    user: CurrentUserDep,
) -> Response:
    """The study's series the caller sees; the whole study only for site admins. A series
    shared with projects the caller does not own only leaves the caller's projects."""
    uid = check_uid(study, "StudyInstanceUID")
    series = sorted({i.series_instance_uid for i in catalog.instances_of_study(uid)})
    _require_owner(catalog, user, series)
    if catalog.scope is None:
        _delete_blobs(storage, catalog.delete_study(uid))
    else:
        _delete(catalog, storage, user, series)
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
    """The series leaves the caller's owned projects; deleted when no other holds it."""
    series_instances(catalog, study, series)  # 404 unless the series is in this study
    _require_owner(catalog, user, [series])
    _delete(catalog, storage, user, [series])
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
