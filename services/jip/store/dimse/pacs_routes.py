"""``/api/dicom``: query a peer for studies, retrieve them into a project, saved queries.

The API of the PACS page (``/ui/pacs``) and of `jip dicom saved-query`. Site admins
only, as the rest of ``/api/dicom``: a query reaches the whole hospital PACS, outside
any project (DESIGN.md "Who uses it": the site admin points the PACS at the site).
Every query, retrieval and change to a saved query is in the audit log with who asked,
the peer and how many studies, never a patient's name or ID.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, Field

from jip.api_types import RowIdPath, RowIdQuery
from jip.base import AdminDep, AuditDep, ClientIpDep, ProjectsDep, as_utc, require_admin
from jip.store.deps import AdaptersDep
from jip.store.dimse import peers, retrievals, saved_queries
from jip.store.dimse.pacs_tables import Retrieval, SavedQuery
from jip.store.dimse.study_query import StudyMatch, StudyQuery, find_studies

router = APIRouter(prefix="/api/dicom", tags=["dicom"], dependencies=[Depends(require_admin)])


class StudiesOut(BaseModel):
    studies: list[StudyMatch]
    truncated: bool  # more matched than store.pacs.max_query_results


class RetrieveIn(BaseModel):
    peer: str = Field(min_length=1, max_length=64)
    project: str = Field(min_length=1, max_length=64)
    study_instance_uids: list[str] = Field(min_length=1, max_length=retrievals.MAX_STUDIES)


class RetrievalOut(BaseModel):
    id: str
    saved_query_id: int | None
    peer: str
    method: str
    project: str
    requested_by: str
    state: str
    study_uids: list[str]
    found: int
    skipped: int
    studies_done: int
    completed: int
    failed: int
    warning: int
    remaining: int
    error: str
    created_at: datetime
    finished_at: datetime | None

    @classmethod
    def of(cls, row: Retrieval) -> RetrievalOut:
        return cls(**_utc(row.as_dict()))


class SavedQueryOut(BaseModel):
    id: int
    name: str
    peer: str
    project: str
    query: StudyQuery
    run_at: str
    enabled: bool
    next_run_at: datetime
    created_by: str
    created_at: datetime

    @classmethod
    def of(cls, row: SavedQuery) -> SavedQueryOut:
        return cls(**_utc({name: getattr(row, name) for name in cls.model_fields}))


def _utc(fields: dict[str, Any]) -> dict[str, Any]:
    """Times in UTC with their zone (SQLite hands them back without one)."""
    return {k: as_utc(v) if isinstance(v, datetime) else v for k, v in fields.items()}


@router.post("/peers/{name}/studies")
def query_studies(
    name: str,
    body: StudyQuery,
    adapters: AdaptersDep,
    admin: AdminDep,
    audit: AuditDep,
    ip: ClientIpDep,
) -> StudiesOut:
    """C-FIND at study level on the peer; each match says whether it is stored here."""
    peer = peers.get_peer(adapters.engine, adapters.settings.store.peers, name)
    matches, truncated = find_studies(adapters.settings, adapters.engine, peer, body)
    audit.record(
        "dicom.query",
        username=admin.username,
        target=name,
        detail={"fields": body.used(), "studies": len(matches), "truncated": truncated},
        client_ip=ip,
    )
    return StudiesOut(studies=matches, truncated=truncated)


@router.post("/retrievals", status_code=202)
def retrieve(
    body: RetrieveIn,
    adapters: AdaptersDep,
    admin: AdminDep,
    audit: AuditDep,
    ip: ClientIpDep,
    projects: ProjectsDep,
) -> RetrievalOut:
    """Retrieve the studies into the project in the background; poll the retrieval."""
    projects.get(body.project)  # 404 naming an unknown project, before the peer is asked
    request = retrievals.RetrievalRequest(
        peer=body.peer,
        project=body.project,
        study_uids=body.study_instance_uids,
        requested_by=admin.username,
    )
    row = retrievals.create(adapters, request)
    audit.record(
        "dicom.retrieve",
        username=admin.username,
        target=body.peer,
        detail={
            "retrieval": row.id,
            "project": body.project,
            "method": row.method,
            "studies": len(row.study_uids),
        },
        client_ip=ip,
    )
    retrievals.start(adapters, row.id)
    return RetrievalOut.of(row)


@router.get("/retrievals")
def list_retrievals(
    adapters: AdaptersDep,
    saved_query: RowIdQuery = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[RetrievalOut]:
    """The newest retrievals (of one saved query: its runs)."""
    rows = retrievals.recent(adapters.engine, saved_query_id=saved_query, limit=limit)
    return [RetrievalOut.of(row) for row in rows]


@router.get("/retrievals/{retrieval_id}")
def get_retrieval(retrieval_id: str, adapters: AdaptersDep) -> RetrievalOut:
    """One retrieval and its progress (sub-operations completed, failed, remaining)."""
    return RetrievalOut.of(retrievals.get(adapters.engine, retrieval_id))


@router.get("/saved-queries")
def list_saved_queries(adapters: AdaptersDep) -> list[SavedQueryOut]:
    return [SavedQueryOut.of(row) for row in saved_queries.list_all(adapters.engine)]


@router.post("/saved-queries", status_code=201)
def add_saved_query(
    body: saved_queries.SavedQueryIn,
    adapters: AdaptersDep,
    admin: AdminDep,
    audit: AuditDep,
    ip: ClientIpDep,
    projects: ProjectsDep,
) -> SavedQueryOut:
    """Save a query that runs every day at ``run_at`` (UTC) and retrieves what is new."""
    projects.get(body.project)
    row = saved_queries.add(adapters, body, user=admin.username)
    detail: dict[str, Any] = {
        "peer": body.peer,
        "project": body.project,
        "run_at": body.run_at,
        "fields": body.query.used(),
    }
    audit.record(
        "dicom.saved_query.add", username=admin.username, target=body.name, detail=detail,
        client_ip=ip,
    )  # fmt: skip
    return SavedQueryOut.of(row)


@router.delete("/saved-queries/{query_id}", status_code=204)
def remove_saved_query(
    query_id: RowIdPath,
    adapters: AdaptersDep,
    admin: AdminDep,
    audit: AuditDep,
    ip: ClientIpDep,
) -> Response:
    row = saved_queries.remove(adapters.engine, query_id)
    audit.record("dicom.saved_query.remove", username=admin.username, target=row.name, client_ip=ip)
    return Response(status_code=204)


@router.post("/saved-queries/{query_id}/run", status_code=202)
def run_saved_query(
    query_id: RowIdPath,
    adapters: AdaptersDep,
    admin: AdminDep,
    audit: AuditDep,
    ip: ClientIpDep,
) -> SavedQueryOut:
    """Make the query due now: `jip up`'s scheduler runs it at its next look."""
    row = saved_queries.run_soon(adapters.engine, query_id)
    audit.record(
        "dicom.saved_query.run_now", username=admin.username, target=row.name, client_ip=ip
    )
    return SavedQueryOut.of(row)
