"""``/api/meta``: series search, facets, the field catalogue and index state.

Series search, facets and field values cover the series of the caller's projects (all
of them for site admins), and name only those projects in ``Projects``. Bad input is a 400 whose message names the field or the query
clause at fault, request bodies included (see :class:`CheckedRoute`): the request's
query, sort and aggregations are parsed here, once, before the index sees them. Saved
cohorts (``/api/meta/cohorts``) have their own router in :mod:`jip.meta.cohort_routes`.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field

from jip.api_types import MAX_ROW_ID
from jip.base import AdminDep, AuditDep, ClientIpDep, CurrentUserDep, project_scope
from jip.errors import Invalid
from jip.meta.aggs import parse_aggs, parse_sort
from jip.meta.deps import IndexDep, LedgerDep, LimitsDep
from jip.meta.query import parse_query
from jip.meta.service import (
    field_catalogue,
    field_values,
    scoped_aggs,
    scoped_hits,
    scoped_query,
    sweep_orphans,
)

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


# -- search ------------------------------------------------------------------------------
@router.post("/search")
def search(body: SearchIn, index: IndexDep, user: CurrentUserDep, limits: LimitsDep) -> SearchOut:
    """Series matching a cohort query: a page of them, the total and facet counts."""
    scope = project_scope(user)
    query = scoped_query(parse_query(body.query, limits=limits), scope)
    sort = parse_sort(body.sort)
    aggs = scoped_aggs(parse_aggs(body.aggs, limits=limits), scope)
    found = index.search(query, sort, body.offset, body.limit, body.fields, aggs)
    return SearchOut(
        total=found.total, hits=scoped_hits(found.hits, scope), aggregations=found.aggregations
    )


@router.post("/aggregate")
def aggregate(
    body: AggregateIn, index: IndexDep, user: CurrentUserDep, limits: LimitsDep
) -> AggregateOut:
    """Facet counts (terms, range, date_histogram, cardinality) over the matching series."""
    scope = project_scope(user)
    query = scoped_query(parse_query(body.query, limits=limits), scope)
    aggs = scoped_aggs(parse_aggs(body.aggs, limits=limits), scope)
    return AggregateOut(aggregations=index.aggregate(query, aggs))


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
