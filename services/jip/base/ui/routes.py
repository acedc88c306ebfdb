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
from pydicom.datadict import keyword_for_tag

from jip import errors
from jip.api_types import RowIdPath
from jip.base.auth import CurrentUser
from jip.base.deps import IssuerDep
from jip.base.ui import explore, workflow_form
from jip.base.ui.api import Api, ApiError
from jip.base.ui.session import (
    CSRF_FIELD,
    REFRESH_COOKIE,
    UiRoute,
    check_csrf,
    clear_session,
    finish_login,
    login_redirect,
    session_user,
)

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
STATIC = {path.name: path for path in (HERE / "static").iterdir() if path.is_file()}

WINDOW_PRESETS = {
    "default": None,
    "soft tissue": "40,400,linear",
    "lung": "-600,1500,linear",
    "bone": "400,1800,linear",
    "brain": "40,80,linear",
}
FINISHED_RUN_STATES = frozenset({"success", "failed", "cancelled"})
UserDep = Annotated[CurrentUser, Depends(session_user)]
CsrfField = Annotated[str, Form(alias=CSRF_FIELD)]


class PageRoute(UiRoute):
    page_errors = (ApiError, errors.JipError)

    def error_response(self, request: Request, exc: Exception) -> Response:
        if isinstance(exc, ApiError):
            status, message = exc.status, exc.detail
        else:
            assert isinstance(exc, errors.JipError)
            from jip.app import status_for

            status, message = status_for(exc), str(exc)
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
    issuer: IssuerDep,
    code: Annotated[str, Query()] = "",
    state: Annotated[str, Query()] = "",
    error: Annotated[str, Query()] = "",
) -> Response:
    if error or not code:
        raise errors.Unauthorized(f"login failed: {error or 'no code'}")
    return finish_login(request, issuer, code, state)


@router.post("/ui/logout")
def logout(request: Request, issuer: IssuerDep, csrf_token: CsrfField = "") -> Response:
    check_csrf(request, csrf_token)
    refresh = request.cookies.get(REFRESH_COOKIE)
    if refresh:
        host = request.client.host if request.client else ""
        issuer.logout(refresh_token=refresh, user=None, client_ip=host)
    response = see_other("/auth/logout")
    clear_session(response)
    return response


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
    me = await api.get("/api/me")
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
        projects=sorted(me["projects"]),
        page_url=lambda new_offset: "/ui/explore?" + urlencode([*base, ("offset", new_offset)]),
    )


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
    me = await api.get("/api/me")
    return render(request, "cohorts.html", cohorts=cohorts, projects=sorted(me["projects"]))


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


# -- series ----------------------------------------------------------------------------------
@router.get("/ui/series/{study}/{series}")
async def series_page(
    request: Request,
    user: UserDep,
    study: str,
    series: str,
    window: Annotated[str, Query()] = "default",
) -> Response:
    _user(request, user)
    api = Api(request)
    base = f"/dicom-web/studies/{quote(study)}/series/{quote(series)}"
    instances = await api.get(f"{base}/metadata", headers={"Accept": "application/dicom+json"})
    instances.sort(key=lambda item: _number(_value(item, "00200013")))
    header = _header(instances[0]) if instances else []
    preset = WINDOW_PRESETS.get(window)
    frames = [
        f"/ui/frame/{quote(study)}/{quote(series)}/{quote(str(_value(item, '00080018')))}"
        + (f"?{urlencode({'window': preset})}" if preset else "")
        for item in instances
    ]
    found = await api.post(
        "/api/meta/search",
        json={
            "query": {"term": {"ReferencedSeriesInstanceUID": series}},
            "limit": 50,
            "fields": explore.RESULT_FIELDS,
        },
    )
    return render(
        request,
        "series.html",
        study=study,
        series=series,
        header=header,
        frames=frames,
        presets=list(WINDOW_PRESETS),
        window=window,
        linked=found["hits"],
    )


@router.get("/ui/frame/{study}/{series}/{instance}")
async def frame(
    request: Request,
    user: UserDep,
    study: str,
    series: str,
    instance: str,
    window: Annotated[str | None, Query()] = None,
) -> Response:
    path = f"/dicom-web/studies/{quote(study)}/series/{quote(series)}/instances/{quote(instance)}"
    response = await Api(request).call(
        "GET",
        f"{path}/rendered",
        params={"window": window} if window else None,
        headers={"Accept": "image/png"},
    )
    return Response(
        response.content,
        media_type=response.headers.get("content-type"),
        headers={"Cache-Control": "private, max-age=300"},
    )


def _value(item: dict[str, Any], tag: str) -> Any:
    values = item.get(tag, {}).get("Value") or [""]
    return values[0]


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _header(item: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(tag, keyword, VR, value) rows of one instance's DICOM JSON (bulk data left out)."""
    rows = []
    for tag in sorted(item):
        element = item[tag]
        values = element.get("Value")
        if values is None:
            shown = "(bulk data)" if "BulkDataURI" in element else ""
        elif element.get("vr") == "SQ":
            shown = f"({len(values)} item(s))"
        elif element.get("vr") == "PN":
            shown = "\\".join(str(v.get("Alphabetic", "")) for v in values)
        else:
            shown = "\\".join(str(v) for v in values)
        keyword = keyword_for_tag(int(tag, 16)) or ""
        rows.append((f"({tag[:4]},{tag[4:]})", keyword, element.get("vr", ""), shown[:200]))
    return rows


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


@router.get("/ui/runs/{run_id}")
async def run_page(request: Request, user: UserDep, run_id: str) -> Response:
    _user(request, user)
    api = Api(request)
    run = await api.get(f"/api/flow/runs/{quote(run_id)}")
    logs = (await api.call("GET", f"/api/flow/runs/{quote(run_id)}/logs")).text
    results = await api.get(f"/api/flow/runs/{quote(run_id)}/results")
    task_names = sorted({name for row in run["per_series"] for name in row["tasks"]})
    waiting = sorted(
        {task["task_id"].rsplit(".", 1)[-1] for task in run["tasks"] if task["state"] == "waiting"}
    )
    return render(
        request,
        "run.html",
        run=run,
        logs=logs,
        results=results,
        task_names=task_names,
        waiting=waiting,
        finished=run["state"] in FINISHED_RUN_STATES,
    )


@router.post("/ui/runs/{run_id}/cancel")
async def cancel_run(
    request: Request, user: UserDep, run_id: str, csrf_token: CsrfField = ""
) -> Response:
    check_csrf(request, csrf_token)
    await Api(request).post(f"/api/flow/runs/{quote(run_id)}/cancel")
    return see_other(f"/ui/runs/{quote(run_id)}")


@router.post("/ui/runs/{run_id}/tasks/{task}/done")
async def mark_done(
    request: Request, user: UserDep, run_id: str, task: str, csrf_token: CsrfField = ""
) -> Response:
    check_csrf(request, csrf_token)
    await Api(request).post(f"/api/flow/runs/{quote(run_id)}/tasks/{quote(task)}/done")
    return see_other(f"/ui/runs/{quote(run_id)}")


@router.get("/ui/runs/{run_id}/results/{result_id}")
async def download_result(
    request: Request, user: UserDep, run_id: str, result_id: RowIdPath
) -> Response:
    response = await Api(request).call("GET", f"/api/flow/runs/{quote(run_id)}/results/{result_id}")
    if response.status_code == 303:  # a DICOM result: show its series
        location = response.headers["location"].removeprefix("/dicom-web/studies/")
        study, _, series = location.partition("/series/")
        return see_other(f"/ui/series/{quote(study)}/{quote(series)}")
    headers = {"Content-Disposition": response.headers.get("content-disposition", "attachment")}
    return Response(
        response.content, media_type=response.headers.get("content-type"), headers=headers
    )


# -- admin ---------------------------------------------------------------------------------------
@router.get("/ui/admin")
async def admin_page(request: Request, user: UserDep) -> Response:
    _user(request, user)
    api = Api(request)
    users = await api.get("/api/users") if user.is_admin else []
    projects = await api.get("/api/projects")
    audit = await api.get("/api/audit", params={"limit": 100}) if user.is_admin else []
    return render(request, "admin.html", users=users, projects=projects, audit=audit)
