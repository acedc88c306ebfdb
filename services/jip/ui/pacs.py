"""The PACS page (``/ui/pacs``): query a DICOM peer, retrieve studies into a project,
follow the retrieval, and keep saved queries that run every night.

As every page, it goes through the site's API with the session's token
(``/api/dicom/...``, site admins only), so the API's checks and audit apply. A retrieval
page reloads itself every few seconds until the retrieval is finished (the API's
status endpoint is what it shows); retrieved studies open in Explore.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Form, Query, Request, Response

from jip.ui.admin import AdminUserDep
from jip.ui.api import Api, ApiError
from jip.ui.routes import CsrfField, PageRoute, render, see_other
from jip.ui.session import check_csrf

PACS = "/ui/pacs"
QUERY_FIELDS = (
    "patient_name",
    "patient_id",
    "study_date_from",
    "study_date_to",
    "modality",
    "accession_number",
)
REFRESH_S = 2

router = APIRouter(tags=["ui"], route_class=PageRoute, include_in_schema=False)


@router.get(PACS)
async def pacs_page(
    request: Request,
    user: AdminUserDep,
    peer: Annotated[str, Query(max_length=64)] = "",
    search: Annotated[str, Query(max_length=1)] = "",
) -> Response:
    """The query form, its results (``?search=1``), saved queries and recent retrievals."""
    api = Api(request)
    peers = await api.get("/api/dicom/peers")
    query = {name: request.query_params.get(name, "").strip() for name in QUERY_FIELDS}
    chosen = peer or (peers[0]["name"] if peers else "")
    studies: list[dict[str, Any]] = []
    truncated, problem, searched = False, "", bool(search and chosen)
    if searched:
        try:
            found = await api.post(f"/api/dicom/peers/{quote(chosen, safe='')}/studies", json=query)
            studies, truncated = found["studies"], found["truncated"]
        except ApiError as exc:
            problem = f"{exc.detail} (HTTP {exc.status})"
    return render(
        request,
        "pacs.html",
        peers=peers,
        peer=chosen,
        query=query,
        studies=studies,
        truncated=truncated,
        searched=searched,
        problem=problem,
        projects=sorted(p["name"] for p in await api.get("/api/projects")),
        saved=await api.get("/api/dicom/saved-queries"),
        retrievals=await api.get("/api/dicom/retrievals", params={"limit": 10}),
    )


@router.post(PACS + "/retrieve")
async def retrieve(
    request: Request,
    user: AdminUserDep,
    peer: Annotated[str, Form()],
    project: Annotated[str, Form()],
    study: Annotated[list[str] | None, Form()] = None,
    csrf_token: CsrfField = "",
) -> Response:
    """Start retrieving the ticked studies; go to the retrieval's progress page."""
    check_csrf(request, csrf_token)
    body = {"peer": peer, "project": project, "study_instance_uids": study or []}
    if not study:
        return _back_with(request, "tick at least one study to retrieve")
    created = await Api(request).post("/api/dicom/retrievals", json=body)
    return see_other(f"{PACS}/retrievals/{quote(created['id'], safe='')}")


@router.get(PACS + "/retrievals/{retrieval_id}")
async def retrieval_page(request: Request, user: AdminUserDep, retrieval_id: str) -> Response:
    """Progress of one retrieval; reloads itself until it is finished."""
    row = await Api(request).get(f"/api/dicom/retrievals/{quote(retrieval_id, safe='')}")
    finished = row["state"] not in ("queued", "running")
    return render(
        request,
        "pacs_retrieval.html",
        r=row,
        finished=finished,
        refresh_s=REFRESH_S,
        explore=_explore_url(row["study_uids"]),
    )


@router.post(PACS + "/saved")
async def save_query(
    request: Request,
    user: AdminUserDep,
    name: Annotated[str, Form()],
    peer: Annotated[str, Form()],
    project: Annotated[str, Form()],
    run_at: Annotated[str, Form()] = "02:00",
    csrf_token: CsrfField = "",
) -> Response:
    """Save the query of the form (the fields of the search above it) to run nightly."""
    check_csrf(request, csrf_token)
    form = await request.form()
    query = {field: str(form.get(field, "")).strip() for field in QUERY_FIELDS}
    body = {"name": name, "peer": peer, "project": project, "run_at": run_at, "query": query}
    created = await Api(request).post("/api/dicom/saved-queries", json=body)
    return see_other(f"{PACS}/saved/{created['id']}")


@router.get(PACS + "/saved/{query_id}")
async def saved_page(request: Request, user: AdminUserDep, query_id: int) -> Response:
    """One saved query and its runs (when, found, retrieved, failed)."""
    api = Api(request)
    saved = next(
        (s for s in await api.get("/api/dicom/saved-queries") if s["id"] == query_id), None
    )
    if saved is None:
        return _back_with(request, f"no saved query {query_id}")
    runs = await api.get("/api/dicom/retrievals", params={"saved_query": query_id, "limit": 100})
    due = datetime.fromisoformat(saved["next_run_at"]) <= datetime.now(UTC) and saved["enabled"]
    busy = due or any(run["state"] in ("queued", "running") for run in runs)
    return render(
        request, "pacs_saved.html", saved=saved, runs=runs, busy=busy, due=due, refresh_s=REFRESH_S
    )


@router.post(PACS + "/saved/{query_id}/run")
async def run_saved(
    request: Request, user: AdminUserDep, query_id: int, csrf_token: CsrfField = ""
) -> Response:
    """Make the query due now: the site's scheduler runs it at its next look."""
    check_csrf(request, csrf_token)
    await Api(request).post(f"/api/dicom/saved-queries/{query_id}/run")
    return see_other(f"{PACS}/saved/{query_id}?queued=1")


@router.post(PACS + "/saved/{query_id}/delete")
async def delete_saved(
    request: Request, user: AdminUserDep, query_id: int, csrf_token: CsrfField = ""
) -> Response:
    check_csrf(request, csrf_token)
    await Api(request).call("DELETE", f"/api/dicom/saved-queries/{query_id}")
    return see_other(PACS)


def _explore_url(study_uids: list[str]) -> str:
    """Explore filtered to the retrieved studies (a cohort-language clause)."""
    if not study_uids:
        return "/ui/explore"
    clause = {"terms": {"StudyInstanceUID": study_uids[:100]}}
    return "/ui/explore?" + urlencode({"q": json.dumps(clause)})


def _back_with(request: Request, message: str) -> Response:
    return render(request, "error.html", status_code=400, status=400, message=message)
