"""Pages of the researcher's web UI, served at ``/`` and ``/ui/...``.

Every page except the login redirect needs the session cookie (:mod:`.session`); pages
read and change data only through the site's HTTP API (:mod:`.api`), with the session's
token. Form posts are checked against the CSRF cookie.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, File, Form, Query, Request, Response, UploadFile
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from jip import errors
from jip.base import CurrentUser, IdentityDep
from jip.ui import explore, workflow_form
from jip.ui.api import Api, ApiError
from jip.ui.session import (
    CSRF_FIELD,
    UiRoute,
    check_csrf,
    end_session,
    finish_login,
    login_redirect,
    session_user,
)

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
STATIC = {path.name: path for path in (HERE / "static").iterdir() if path.is_file()}

UserDep = Annotated[CurrentUser, Depends(session_user)]
CsrfField = Annotated[str, Form(alias=CSRF_FIELD)]


class PageRoute(UiRoute):
    page_errors = (ApiError, errors.JipError)

    def error_response(self, request: Request, exc: Exception) -> Response:
        if isinstance(exc, ApiError):
            status, message = exc.status, exc.detail
        else:
            assert isinstance(exc, errors.JipError)
            status, message = errors.status_for(exc), str(exc)
        return render(request, "error.html", status_code=status, status=status, message=message)


router = APIRouter(tags=["ui"], route_class=PageRoute, include_in_schema=False)


def render(request: Request, template: str, *, status_code: int = 200, **context: Any) -> Response:
    context.setdefault("user", getattr(request.state, "ui_user", None))
    context["csrf"] = request.state.csrf
    context["path"] = request.url.path
    return templates.TemplateResponse(request, template, context, status_code=status_code)


def see_other(url: str) -> Response:
    return RedirectResponse(url, status_code=303)


def _user(request: Request, user: CurrentUser) -> CurrentUser:
    request.state.ui_user = user
    return user


@router.get("/ui/static/{name}")
def static(name: str) -> Response:
    """The UI's CSS and script (public: they hold no data)."""
    if name not in STATIC:
        raise errors.NotFound(f"no static file {name!r}")
    return FileResponse(STATIC[name], headers={"Cache-Control": "public, max-age=3600"})


# -- session -------------------------------------------------------------------------------
@router.get("/")
def home() -> Response:
    return see_other("/ui/explore")


@router.get("/ui/login")
def login(request: Request) -> Response:
    return login_redirect(request)


@router.get("/ui/callback")
def callback(
    request: Request,
    identity: IdentityDep,
    code: Annotated[str, Query()] = "",
    state: Annotated[str, Query()] = "",
    error: Annotated[str, Query()] = "",
) -> Response:
    if error or not code:
        raise errors.Unauthorized(f"login failed: {error or 'no code'}")
    return finish_login(request, identity.issuer, code, state)


@router.post("/ui/logout")
def logout(request: Request, csrf_token: CsrfField = "") -> Response:
    check_csrf(request, csrf_token)
    return end_session(request)


# -- explore -------------------------------------------------------------------------------
@router.get("/ui/explore")
async def explore_page(
    request: Request,
    user: UserDep,
    q: Annotated[str, Query()] = "",
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Response:
    _user(request, user)
    params = {key: request.query_params.getlist(key) for key in request.query_params}
    selection = explore.Selection.parse(params, q)
    api = Api(request)
    facets: list[tuple[explore.Facet, list[tuple[str, int]]]] = []
    counts: dict[str, list[tuple[str, int]]] = {}
    for query, group in explore.aggregation_requests(selection):
        aggs = {facet.name: facet.agg() for facet in group}
        body = await api.post("/api/meta/aggregate", json={"query": query, "aggs": aggs})
        for facet in group:
            counts[facet.name] = explore.buckets(facet, body["aggregations"].get(facet.name, {}))
    facets = [(facet, counts[facet.name]) for facet in explore.FACETS]
    query = selection.query()
    found = await api.post(
        "/api/meta/search",
        json={
            "query": query,
            "offset": offset,
            "limit": explore.PAGE_SIZE,
            "fields": explore.RESULT_FIELDS,
            "sort": "StudyDate",
        },
    )
    projects = await _projects_to_choose(api)
    base = [(k, v) for k, values in params.items() if k != "offset" for v in values]
    return render(
        request,
        "explore.html",
        facets=facets,
        selection=selection,
        hits=found["hits"],
        total=found["total"],
        offset=offset,
        page_size=explore.PAGE_SIZE,
        query_json=json.dumps(query or {}, indent=None),
        projects=projects,
        page_url=lambda new_offset: "/ui/explore?" + urlencode([*base, ("offset", new_offset)]),
    )


async def _projects_to_choose(api: Api) -> list[str]:
    """The projects a page offers to save into: the caller's own, and every project for
    a site admin, who may act in all of them without being a member (the first admin
    of a new site belongs to none)."""
    return sorted(str(project["name"]) for project in await api.get("/api/projects"))


@router.get("/ui/thumb/{study}/{series}")
async def thumbnail(request: Request, user: UserDep, study: str, series: str) -> Response:
    response = await Api(request).call(
        "GET",
        f"/dicom-web/studies/{quote(study)}/series/{quote(series)}/thumbnail",
        params={"viewport": "96,96"},
        headers={"Accept": "image/png"},
    )
    return Response(
        response.content,
        media_type=response.headers.get("content-type"),
        headers={"Cache-Control": "private, max-age=300"},
    )


# -- cohorts -------------------------------------------------------------------------------
@router.get("/ui/cohorts")
async def cohorts_page(request: Request, user: UserDep) -> Response:
    _user(request, user)
    api = Api(request)
    cohorts = await api.get("/api/meta/cohorts")
    projects = await _projects_to_choose(api)
    return render(request, "cohorts.html", cohorts=cohorts, projects=projects)


@router.post("/ui/cohorts")
async def create_cohort(
    request: Request,
    user: UserDep,
    name: Annotated[str, Form()],
    query: Annotated[str, Form()] = "{}",
    project: Annotated[str, Form()] = "",
    description: Annotated[str, Form()] = "",
    csrf_token: CsrfField = "",
) -> Response:
    check_csrf(request, csrf_token)
    try:
        parsed = json.loads(query) or None
    except ValueError as exc:
        raise errors.Invalid(f"query: not valid JSON ({exc})") from None
    body = {"name": name, "description": description, "query": parsed, "project": project or None}
    cohort = await Api(request).post("/api/meta/cohorts", json=body)
    return see_other(f"/ui/cohorts/{quote(cohort['id'])}")


@router.post("/ui/cohorts/import")
async def import_cohort(
    request: Request,
    user: UserDep,
    document: Annotated[UploadFile, File()],
    project: Annotated[str, Form()] = "",
    name: Annotated[str, Form()] = "",
    csrf_token: CsrfField = "",
) -> Response:
    check_csrf(request, csrf_token)
    try:
        parsed = json.loads(await document.read())
    except ValueError as exc:
        raise errors.Invalid(f"{document.filename}: not a JSON cohort export ({exc})") from None
    params = {key: value for key, value in (("project", project), ("name", name)) if value}
    cohort = await Api(request).post("/api/meta/cohorts/import", json=parsed, params=params)
    return see_other(f"/ui/cohorts/{quote(cohort['id'])}")


@router.get("/ui/cohorts/{cohort_id}")
async def cohort_page(
    request: Request,
    user: UserDep,
    cohort_id: str,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Response:
    _user(request, user)
    api = Api(request)
    cohort = await api.get(f"/api/meta/cohorts/{quote(cohort_id)}")
    series = await api.get(
        f"/api/meta/cohorts/{quote(cohort_id)}/series",
        params={"offset": offset, "limit": explore.PAGE_SIZE, "fields": explore.RESULT_FIELDS},
    )
    return render(
        request,
        "cohort.html",
        cohort=cohort,
        series=series,
        offset=offset,
        page_size=explore.PAGE_SIZE,
        query_json=json.dumps(cohort["query"], indent=2),
    )


@router.post("/ui/cohorts/{cohort_id}/rename")
async def rename_cohort(
    request: Request,
    user: UserDep,
    cohort_id: str,
    name: Annotated[str, Form()],
    csrf_token: CsrfField = "",
) -> Response:
    check_csrf(request, csrf_token)
    await Api(request).patch(f"/api/meta/cohorts/{quote(cohort_id)}", json={"name": name})
    return see_other(f"/ui/cohorts/{quote(cohort_id)}")


@router.post("/ui/cohorts/{cohort_id}/freeze")
async def freeze_cohort(
    request: Request, user: UserDep, cohort_id: str, csrf_token: CsrfField = ""
) -> Response:
    check_csrf(request, csrf_token)
    await Api(request).post(f"/api/meta/cohorts/{quote(cohort_id)}/freeze")
    return see_other(f"/ui/cohorts/{quote(cohort_id)}")


@router.get("/ui/cohorts/{cohort_id}/export")
async def export_cohort(
    request: Request,
    user: UserDep,
    cohort_id: str,
    include_series: Annotated[bool, Query()] = False,
) -> Response:
    response = await Api(request).call(
        "GET",
        f"/api/meta/cohorts/{quote(cohort_id)}/export",
        params={"include_series": str(include_series).lower()},
    )
    disposition = response.headers.get("content-disposition", "attachment")
    return Response(
        response.content,
        media_type="application/json",
        headers={"Content-Disposition": disposition},
    )


# -- workflows -----------------------------------------------------------------------------------
@router.get("/ui/workflows")
async def workflows_page(
    request: Request, user: UserDep, cohort: Annotated[str, Query()] = ""
) -> Response:
    _user(request, user)
    api = Api(request)
    workflows = await api.get("/api/flow/workflows")
    runs = await api.get("/api/flow/runs", params={"limit": 20})
    return render(request, "workflows.html", workflows=workflows, runs=runs, cohort=cohort)


@router.get("/ui/workflows/{dag_id}")
async def workflow_page(
    request: Request, user: UserDep, dag_id: str, cohort: Annotated[str, Query()] = ""
) -> Response:
    _user(request, user)
    api = Api(request)
    workflow = await api.get(f"/api/flow/workflows/{quote(dag_id)}")
    cohorts = await api.get("/api/meta/cohorts")
    return render(
        request,
        "workflow.html",
        workflow=workflow,
        cohorts=cohorts,
        cohort=cohort,
        operators=workflow_form.operators(workflow["params_schema"]),
    )


@router.post("/ui/workflows/{dag_id}")
async def start_workflow(request: Request, user: UserDep, dag_id: str) -> Response:
    form = await request.form()
    check_csrf(request, str(form.get(CSRF_FIELD, "")))
    workflow = await Api(request).get(f"/api/flow/workflows/{quote(dag_id)}")
    fields = {key: str(value) for key, value in form.items() if isinstance(value, str)}
    params = workflow_form.params(workflow["params_schema"], fields)
    body = {"cohort_id": fields.get("cohort_id") or None, "params": params}
    run = await Api(request).post(f"/api/flow/workflows/{quote(dag_id)}/runs", json=body)
    return see_other(f"/ui/runs/{quote(run['run_id'])}")
