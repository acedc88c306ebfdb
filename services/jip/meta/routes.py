"""``/api/meta``: series search, facets, the field catalogue, saved cohorts, index state.

Series search, facets and field values cover the series of the caller's projects (all
of them for site admins); saved cohorts are limited to the caller's projects. Bad input is a 400 whose message names the field or
the query clause at fault, request bodies included (see :class:`CheckedRoute`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field

from jip.api_types import MAX_ROW_ID
from jip.base.audit import AuditLog
from jip.base.auth import project_scope
from jip.base.deps import AdminDep, AuditDep, ClientIpDep, CurrentUserDep
from jip.errors import Invalid
from jip.meta.cohorts import CohortInfo
from jip.meta.deps import CohortsDep, IndexDep, LedgerDep
from jip.meta.service import field_catalogue, field_values, scoped_query, sweep_orphans

MAX_PAGE = 10_000  # the index's result window


class CheckedRoute(APIRoute):
    """Request validation errors become :class:`Invalid` (400) naming the field, the same
    answer the cohort language gives for a bad clause, instead of FastAPI's 422."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def checked(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                raise Invalid(_describe(exc.errors())) from None

        return checked


def _describe(errors: Any) -> str:
    parts = []
    for error in errors:
        if error.get("type") == "json_invalid":
            reason = (error.get("ctx") or {}).get("error", "")
            parts.append(f"body: not valid JSON ({reason})" if reason else "body: not valid JSON")
            continue
        loc = [str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path")]
        where = ".".join(loc) or "body"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


router = APIRouter(prefix="/api/meta", tags=["meta"], route_class=CheckedRoute)


# -- schemas -----------------------------------------------------------------------------
class SearchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: dict[str, Any] | None = None
    sort: str | dict[str, Any] | list[str | dict[str, Any]] | None = None
    offset: int = Field(default=0, ge=0, le=MAX_ROW_ID)
    limit: int = Field(default=20, ge=0, le=MAX_PAGE)
    fields: list[str] | None = None
    aggs: dict[str, Any] | None = None


class SearchOut(BaseModel):
    total: int
    hits: list[dict[str, Any]]
    aggregations: dict[str, Any] = Field(default_factory=dict)


class AggregateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: dict[str, Any] | None = None
    aggs: dict[str, Any]


class AggregateOut(BaseModel):
    aggregations: dict[str, Any]


class FieldOut(BaseModel):
    name: str
    type: str
    level: str
    multi: bool
    sortable: bool
    keyword: str | None = None  # the exact twin of a text field


class FieldValuesOut(BaseModel):
    field: str
    values: list[dict[str, Any]]


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


class IndexErrorOut(BaseModel):
    sop_instance_uid: str
    series_instance_uid: str
    error: str
    received_at: datetime


class IndexErrorsOut(BaseModel):
    total: int
    errors: list[IndexErrorOut]


class IndexStatusOut(BaseModel):
    pending: int  # instances waiting in the outbox
    failed: int  # instances whose header could not be indexed
    documents: int  # series documents in the index


class ReindexOut(BaseModel):
    queued: int  # instances put back into the outbox
    removed: int  # documents of series no longer in the catalog


def _fields(fields: list[str] | None) -> list[str] | None:
    """``fields=a,b`` or ``fields=a&fields=b``."""
    if not fields:
        return None
    return [name.strip() for item in fields for name in item.split(",") if name.strip()]


# -- search ------------------------------------------------------------------------------
@router.post("/search")
def search(body: SearchIn, index: IndexDep, user: CurrentUserDep) -> SearchOut:
    """Series matching a cohort query: a page of them, the total and facet counts."""
    query = scoped_query(body.query, project_scope(user))
    found = index.search(query, body.sort, body.offset, body.limit, body.fields, body.aggs)
    return SearchOut(total=found.total, hits=found.hits, aggregations=found.aggregations)


@router.post("/aggregate")
def aggregate(body: AggregateIn, index: IndexDep, user: CurrentUserDep) -> AggregateOut:
    """Facet counts (terms, range, date_histogram, cardinality) over the matching series."""
    query = scoped_query(body.query, project_scope(user))
    return AggregateOut(aggregations=index.aggregate(query, body.aggs))


@router.get("/fields")
def fields(_user: CurrentUserDep) -> list[FieldOut]:
    """Every field a query may name: its type, level, and whether it holds several values."""
    return [FieldOut(**entry) for entry in field_catalogue()]


@router.get("/fields/{name}/values")
def values(
    name: str, index: IndexDep, user: CurrentUserDep, size: int = Query(20, ge=1, le=1000)
) -> FieldValuesOut:
    """The most frequent values of one field over the series the caller may see."""
    return FieldValuesOut(field=name, values=field_values(index, name, size, project_scope(user)))


# -- index state -------------------------------------------------------------------------
@router.get("/status")
def status(ledger: LedgerDep, index: IndexDep, user: CurrentUserDep) -> IndexStatusOut:
    """How far indexing is: instances waiting, failed, and series documents indexed (of the
    series the caller may see)."""
    progress = ledger.progress(index, project_scope(user))
    return IndexStatusOut(
        pending=progress.pending, failed=progress.failed, documents=progress.documents
    )


@router.get("/errors")
def errors(
    ledger: LedgerDep,
    user: CurrentUserDep,
    offset: int = Query(0, ge=0, le=MAX_ROW_ID),
    limit: int = Query(100, ge=1, le=1000),
) -> IndexErrorsOut:
    """Instances whose header could not be indexed (of the series the caller may see),
    newest first, with the reason."""
    total, failures = ledger.failures(offset, limit, project_scope(user))
    return IndexErrorsOut(
        total=total, errors=[IndexErrorOut(**vars(failure)) for failure in failures]
    )


@router.post("/reindex")
def reindex(
    ledger: LedgerDep, index: IndexDep, admin: AdminDep, audit: AuditDep, ip: ClientIpDep
) -> ReindexOut:
    """Re-read every header into the index while search goes on (site admins).

    Every instance goes back into the outbox and the running indexer replaces each series
    document in place; documents of series the catalog no longer holds are removed now.
    Follow the progress with ``GET /api/meta/status``.
    """
    queued = ledger.requeue()
    removed = sweep_orphans(index, ledger)
    audit.record(
        "meta.reindex",
        username=admin.username,
        client_ip=ip,
        detail={"queued": queued, "removed": removed},
    )
    return ReindexOut(queued=queued, removed=removed)


# -- cohorts -----------------------------------------------------------------------------
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
