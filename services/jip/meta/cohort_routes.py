"""``/api/meta/cohorts``: saved cohorts of the caller's projects, their series, export
and import.

The work is done by :class:`jip.meta.cohorts.Cohorts`; each route parses, calls it, records
what changed in the audit log and returns a schema. Bad input is a 400 naming the field
at fault, as on the rest of ``/api/meta`` (:class:`jip.meta.routes.CheckedRoute`).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict

from jip.api_types import MAX_ROW_ID
from jip.base import AuditDep, AuditLog, ClientIpDep, CurrentUserDep
from jip.meta.cohorts import CohortInfo
from jip.meta.deps import CohortsDep
from jip.meta.routes import MAX_PAGE, CheckedRoute

router = APIRouter(prefix="/api/meta", tags=["meta"], route_class=CheckedRoute)


# -- schemas -----------------------------------------------------------------------------
class CohortIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    # Unset: the caller's only project (a site admin's: the site's only project).
    project: str | None = None
    query: dict[str, Any] | None = None
    freeze: bool = False


class CohortPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    description: str | None = None
    query: dict[str, Any] | None = None


class CohortOut(BaseModel):
    id: str
    name: str
    description: str
    project: str
    query: dict[str, Any]
    frozen: bool
    frozen_at: datetime | None
    frozen_series: int | None
    source_site: str
    created_by: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, info: CohortInfo) -> CohortOut:
        return cls(
            frozen=info.frozen,
            **{name: getattr(info, name) for name in cls.model_fields if name != "frozen"},
        )


class CohortSeriesOut(BaseModel):
    total: int
    frozen: bool
    hits: list[dict[str, Any]]


def _fields(fields: list[str] | None) -> list[str] | None:
    """``fields=a,b`` or ``fields=a&fields=b``."""
    if not fields:
        return None
    return [name.strip() for item in fields for name in item.split(",") if name.strip()]


# -- routes ------------------------------------------------------------------------------
@router.get("/cohorts")
def list_cohorts(
    cohorts: CohortsDep, user: CurrentUserDep, project: str | None = None
) -> list[CohortOut]:
    """The saved cohorts of the caller's projects (or of one of them)."""
    return [CohortOut.of(info) for info in cohorts.list(user, project)]


@router.post("/cohorts", status_code=201)
def create_cohort(
    body: CohortIn, cohorts: CohortsDep, user: CurrentUserDep, audit: AuditDep, ip: ClientIpDep
) -> CohortOut:
    """Save a cohort query for a project; ``freeze`` also keeps the series it matches now."""
    info = cohorts.create(
        user,
        name=body.name,
        description=body.description,
        project=body.project,
        query=body.query,
        freeze=body.freeze,
    )
    _audit(audit, "meta.cohort.create", user.username, info, ip)
    return CohortOut.of(info)


@router.post("/cohorts/import", status_code=201)
def import_cohort(
    document: dict[str, Any],
    cohorts: CohortsDep,
    user: CurrentUserDep,
    audit: AuditDep,
    ip: ClientIpDep,
    project: str | None = None,
    name: str | None = None,
) -> CohortOut:
    """Save a cohort exported by this or another site (``name`` renames it)."""
    info = cohorts.import_document(user, document, project=project, name=name)
    _audit(audit, "meta.cohort.import", user.username, info, ip)
    return CohortOut.of(info)


@router.get("/cohorts/{cohort_id}")
def get_cohort(cohort_id: str, cohorts: CohortsDep, user: CurrentUserDep) -> CohortOut:
    return CohortOut.of(cohorts.get(user, cohort_id))


@router.patch("/cohorts/{cohort_id}")
def update_cohort(
    cohort_id: str,
    body: CohortPatch,
    cohorts: CohortsDep,
    user: CurrentUserDep,
    audit: AuditDep,
    ip: ClientIpDep,
) -> CohortOut:
    """Rename, describe or change the query (a frozen cohort's query is fixed)."""
    info = cohorts.update(
        user, cohort_id, name=body.name, description=body.description, query=body.query
    )
    _audit(audit, "meta.cohort.update", user.username, info, ip)
    return CohortOut.of(info)


@router.delete("/cohorts/{cohort_id}", status_code=204)
def delete_cohort(
    cohort_id: str, cohorts: CohortsDep, user: CurrentUserDep, audit: AuditDep, ip: ClientIpDep
) -> Response:
    info = cohorts.get(user, cohort_id)
    cohorts.remove(user, cohort_id)
    _audit(audit, "meta.cohort.delete", user.username, info, ip)
    return Response(status_code=204)


@router.post("/cohorts/{cohort_id}/freeze")
def freeze_cohort(
    cohort_id: str, cohorts: CohortsDep, user: CurrentUserDep, audit: AuditDep, ip: ClientIpDep
) -> CohortOut:
    """Keep the series the query matches now; the cohort no longer follows new data."""
    info = cohorts.freeze(user, cohort_id)
    _audit(audit, "meta.cohort.freeze", user.username, info, ip)
    return CohortOut.of(info)


@router.post("/cohorts/{cohort_id}/unfreeze")
def unfreeze_cohort(
    cohort_id: str, cohorts: CohortsDep, user: CurrentUserDep, audit: AuditDep, ip: ClientIpDep
) -> CohortOut:
    """Drop the kept series: the cohort is its query again."""
    info = cohorts.unfreeze(user, cohort_id)
    _audit(audit, "meta.cohort.unfreeze", user.username, info, ip)
    return CohortOut.of(info)


@router.get("/cohorts/{cohort_id}/series")
def cohort_series(
    cohort_id: str,
    cohorts: CohortsDep,
    user: CurrentUserDep,
    offset: int = Query(0, ge=0, le=MAX_ROW_ID),
    limit: int = Query(100, ge=0, le=MAX_PAGE),
    fields: list[str] | None = Query(None),
) -> CohortSeriesOut:
    """The cohort's series: its query run now, or its frozen list."""
    page = cohorts.series(user, cohort_id, offset=offset, limit=limit, fields=_fields(fields))
    return CohortSeriesOut(total=page.total, frozen=page.frozen, hits=page.hits)


@router.get("/cohorts/{cohort_id}/export")
def export_cohort(
    cohort_id: str,
    cohorts: CohortsDep,
    user: CurrentUserDep,
    audit: AuditDep,
    ip: ClientIpDep,
    response: Response,
    include_series: bool = False,
) -> dict[str, Any]:
    """The cohort as a JSON document for other sites; series UIDs only when asked."""
    document = cohorts.export(user, cohort_id, include_series=include_series)
    filename = re.sub(r"[^A-Za-z0-9._-]+", "-", document["name"]).strip("-") or "cohort"
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}.json"'
    _audit(
        audit,
        "meta.cohort.export",
        user.username,
        cohorts.get(user, cohort_id),
        ip,
        include_series=include_series,
    )
    return document


def _audit(
    audit: AuditLog, action: str, username: str, info: CohortInfo, ip: str, **detail: Any
) -> None:
    audit.record(
        action,
        username=username,
        target=f"cohort:{info.id}",
        client_ip=ip,
        detail={"name": info.name, "project": info.project, **detail},
    )
