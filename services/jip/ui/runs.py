"""The run page: progress per series, logs, results, and the human step's actions
(mark it done, or upload a corrected SEG that the run goes on with)."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, File, Request, Response, UploadFile

from jip.api_types import RowIdPath
from jip.ui.api import Api, ApiError
from jip.ui.routes import CsrfField, PageRoute, UserDep, render, see_other
from jip.ui.session import check_csrf

router = APIRouter(tags=["ui"], route_class=PageRoute, include_in_schema=False)

FINISHED_RUN_STATES = frozenset({"success", "failed", "cancelled"})
# Series states a retry runs again (jip.flow.retry.RETRIED_STATES).
RETRIED_STATES = frozenset({"failed", "upstream_failed"})


@router.get("/ui/runs/{run_id}")
async def run_page(request: Request, user: UserDep, run_id: str) -> Response:
    request.state.ui_user = user
    return await _render_run(request, run_id)


async def _render_run(
    request: Request, run_id: str, *, status_code: int = 200, upload_error: str | None = None
) -> Response:
    api = Api(request)
    run = await api.get(f"/api/flow/runs/{quote(run_id)}")
    try:
        logs = (await api.call("GET", f"/api/flow/runs/{quote(run_id)}/logs")).text
    except ApiError as exc:  # a run just started has no task yet, so no log
        if exc.status != 404:
            raise
        logs = ""
    results = await api.get(f"/api/flow/runs/{quote(run_id)}/results")
    task_names = sorted({name for row in run["per_series"] for name in row["tasks"]})
    waiting = sorted(
        {task["task_id"].rsplit(".", 1)[-1] for task in run["tasks"] if task["state"] == "waiting"}
    )
    return render(
        request,
        "run.html",
        status_code=status_code,
        run=run,
        logs=logs,
        results=results,
        task_names=task_names,
        waiting=waiting,
        finished=run["state"] in FINISHED_RUN_STATES,
        failed_series=_failed_series(run),
        upload_error=upload_error,
    )


def _failed_series(run: dict[str, Any]) -> list[dict[str, Any]]:
    """What a retry would run again: the failed series, or all of a run never started."""
    if run["state"] == "failed" and not run["tasks"]:
        return list(run["per_series"])
    return [row for row in run["per_series"] if row["state"] in RETRIED_STATES]


@router.post("/ui/runs/{run_id}/cancel")
async def cancel_run(
    request: Request, user: UserDep, run_id: str, csrf_token: CsrfField = ""
) -> Response:
    check_csrf(request, csrf_token)
    await Api(request).post(f"/api/flow/runs/{quote(run_id)}/cancel")
    return see_other(f"/ui/runs/{quote(run_id)}")


@router.post("/ui/runs/{run_id}/retry")
async def retry_failed(
    request: Request, user: UserDep, run_id: str, csrf_token: CsrfField = ""
) -> Response:
    """Start the run again on its failed series only; the new run's page follows."""
    check_csrf(request, csrf_token)
    started = await Api(request).post(f"/api/flow/runs/{quote(run_id)}/retry")
    return see_other(f"/ui/runs/{quote(started['run_id'])}")


@router.post("/ui/runs/{run_id}/tasks/{task}/done")
async def mark_done(
    request: Request, user: UserDep, run_id: str, task: str, csrf_token: CsrfField = ""
) -> Response:
    check_csrf(request, csrf_token)
    await Api(request).post(f"/api/flow/runs/{quote(run_id)}/tasks/{quote(task)}/done")
    return see_other(f"/ui/runs/{quote(run_id)}")


@router.post("/ui/runs/{run_id}/tasks/{task}/seg")
async def upload_corrected_seg(
    request: Request,
    user: UserDep,
    run_id: str,
    task: str,
    seg: Annotated[list[UploadFile], File()],
    csrf_token: CsrfField = "",
) -> Response:
    """Forward corrected SEG files to the flow API; a refusal is shown on the run page,
    next to the form, rather than on an error page that loses the run's context."""
    check_csrf(request, csrf_token)
    request.state.ui_user = user
    files = [
        ("files", (f.filename or "seg.dcm", await f.read(), "application/dicom"))
        for f in seg
        if f.filename or f.size
    ]
    if not files:
        return await _render_run(
            request, run_id, status_code=400, upload_error="choose a SEG file to upload"
        )
    try:
        await Api(request).post(
            f"/api/flow/runs/{quote(run_id)}/tasks/{quote(task)}/seg", files=files
        )
    except ApiError as exc:
        return await _render_run(request, run_id, status_code=exc.status, upload_error=exc.detail)
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
