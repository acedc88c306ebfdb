"""The flow API under ``/api/flow``: workflows, runs, logs, results, human steps, rules.

Routes parse, call the flow service and return its models; errors are `jip.errors`,
mapped to HTTP by `jip.app`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, File, Query, Request, Response, UploadFile, status
from fastapi.responses import FileResponse, PlainTextResponse, RedirectResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from jip.api_types import RowIdPath
from jip.base import AdminDep, AuditDep, ClientIpDep, CurrentUserDep
from jip.errors import NotFound
from jip.flow import result_files, retry, reviews, rules
from jip.flow.deps import FlowServiceDep, ResultsStorageDep
from jip.flow.models import (
    SERIES_UID_PATTERN,
    FiringModel,
    ResultModel,
    ResultsIn,
    ReviewDone,
    ReviewModel,
    RuleIn,
    RuleModel,
    RunDetail,
    RunModel,
    StartRun,
    WorkflowModel,
)
from jip.flow.schema import ResultKind
from jip.flow.workflows import check_params
from jip.store import IngestorDep, file_chunks

router = APIRouter(prefix="/api/flow", tags=["flow"])


# -- workflows and runs -------------------------------------------------------------------


@router.get("/workflows")
def list_workflows(service: FlowServiceDep) -> list[WorkflowModel]:
    """Every workflow with the JSON Schema of its parameters."""
    return service.workflows()


@router.get("/workflows/{dag_id}")
def get_workflow(dag_id: str, service: FlowServiceDep) -> WorkflowModel:
    return service.workflow(dag_id)


@router.post("/workflows/{dag_id}/runs", status_code=status.HTTP_201_CREATED)
def start_run(
    dag_id: str,
    request: StartRun,
    service: FlowServiceDep,
    user: CurrentUserDep,
) -> RunModel:
    """Start a workflow on a list of series (or a saved cohort) with parameters; needs
    the researcher role in a project of each series. The run gets a token of its own."""
    return service.start(dag_id, request, user=user.username)


@router.get("/runs")
def list_runs(
    service: FlowServiceDep,
    dag_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[RunModel]:
    """The newest runs first."""
    return service.runs(dag_id, limit=limit)


@router.get("/runs/{run_id}")
def get_run(run_id: str, service: FlowServiceDep) -> RunDetail:
    """A run with the state of every task, and per series."""
    return service.run(run_id)


@router.post("/runs/{run_id}/cancel")
def cancel_run(run_id: str, service: FlowServiceDep) -> RunModel:
    """Stop a run (the researcher role in each of its projects); its token ends."""
    return service.cancel(run_id)


@router.post("/runs/{run_id}/retry", status_code=status.HTTP_201_CREATED)
def retry_run(run_id: str, service: FlowServiceDep, user: CurrentUserDep) -> RunModel:
    """Run the workflow again on the run's failed series only (a new run, linked to this
    one by ``retry_of``); needs the researcher role in each of the run's projects."""
    return retry.retry_failed(service, run_id, user=user.username)


@router.get("/runs/{run_id}/logs", response_class=PlainTextResponse)
def run_logs(
    run_id: str, service: FlowServiceDep, task: str | None = None, series: str | None = None
) -> PlainTextResponse:
    """Logs of the run's tasks, or of one task (``organ-seg``) and/or one series."""
    return PlainTextResponse(service.logs(run_id, task=task, series=series))


# -- results ------------------------------------------------------------------------------


@router.get("/runs/{run_id}/results")
def list_results(
    run_id: str, service: FlowServiceDep, series: str | None = None
) -> list[ResultModel]:
    """DICOM series stored in the store and files in the result store, per source series."""
    return service.results(run_id, series=series)


@router.get("/results")
def series_results(
    service: FlowServiceDep,
    series: Annotated[str, Query(min_length=1, max_length=64)],
    kind: ResultKind | None = None,
) -> list[ResultModel]:
    """What every run made from one source series (the series page's linked results)."""
    return service.series_results(series, kind=kind)


@router.post("/runs/{run_id}/results", status_code=status.HTTP_201_CREATED)
def record_results(run_id: str, body: ResultsIn, service: FlowServiceDep) -> list[ResultModel]:
    """Record delivered results: only the run's own tasks may (with the run's token);
    files only under ``runs/<run_id>/`` of the result store."""
    return service.record_results(run_id, body.results)


@router.put("/runs/{run_id}/files/{name:path}", status_code=status.HTTP_201_CREATED)
async def upload_result_file(
    run_id: str,
    name: str,
    request: Request,
    service: FlowServiceDep,
    storage: ResultsStorageDep,
    user: CurrentUserDep,
    audit: AuditDep,
    ip: ClientIpDep,
    series: Annotated[str, Query(pattern=SERIES_UID_PATTERN, max_length=64)],
    operator: Annotated[str, Query(min_length=1, max_length=64)],
) -> ResultModel:
    """Store one result file of the run (the body, streamed) and record it: only the
    run's own tasks may (with the run's token); the same name again replaces it."""
    await run_in_threadpool(result_files.check_upload, service, run_id, name, series)
    settings = request.app.state.runtime.settings
    limit = settings.flow.api.max_file_bytes
    result_files.check_length(request, limit)
    spool = await result_files.spool_body(request.stream(), settings.data_dir / "tmp", limit)
    try:
        stored = await run_in_threadpool(
            result_files.store_file,
            service,
            storage,
            run_id,
            name,
            spool,
            series=series,
            operator=operator,
        )
    finally:
        spool.unlink(missing_ok=True)
    detail = {"name": name, "series": series, "operator": operator, "size": stored.size_bytes}
    audit.record(
        "flow.result.file",
        username=user.username,
        target=f"run:{run_id}",
        detail=detail,
        client_ip=ip,
    )
    return stored


@router.get("/runs/{run_id}/results/{result_id}", response_model=None)
def download_result(
    run_id: str, result_id: RowIdPath, service: FlowServiceDep, storage: ResultsStorageDep
) -> Response:
    """A result file; a DICOM result redirects to its WADO-RS series."""
    record = service.result(run_id, result_id)
    if record.kind is ResultKind.DICOM:
        url = f"/dicom-web/studies/{record.study_instance_uid}/series/{record.result_series_uid}"
        return RedirectResponse(url, status_code=status.HTTP_303_SEE_OTHER)
    filename = record.name.rsplit("/", 1)[-1]
    path = storage.local_path(record.key)
    if path is not None:
        if not path.is_file():
            raise NotFound(f"result file {record.key} is missing from the result store")
        return FileResponse(path, filename=filename)
    return StreamingResponse(
        file_chunks(storage.open(record.key)),
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


# -- the human step -----------------------------------------------------------------------


@router.get("/runs/{run_id}/reviews/{series_uid}")
def get_review(run_id: str, series_uid: str, service: FlowServiceDep) -> ReviewModel:
    """Whether the human step of one series is done (asked by the waiting task)."""
    return reviews.review(service, run_id, series_uid)


@router.post("/runs/{run_id}/tasks/{task}/done")
def review_done(
    run_id: str,
    task: str,
    service: FlowServiceDep,
    user: CurrentUserDep,
    body: Annotated[ReviewDone | None, Body()] = None,
) -> list[ReviewModel]:
    """Mark the human step done for some series (default all); the run goes on."""
    _check_review_task(task)
    return reviews.mark_done(service, run_id, body.series if body else None, user=user.username)


@router.post("/runs/{run_id}/tasks/{task}/seg")
async def upload_corrected_seg(
    run_id: str,
    task: str,
    service: FlowServiceDep,
    ingestor: IngestorDep,
    user: CurrentUserDep,
    files: Annotated[list[UploadFile], File(description="Corrected DICOM SEG files")],
) -> list[ReviewModel]:
    """Upload corrected SEGs: stored, and the series they segment go on with them."""
    _check_review_task(task)
    contents = [await f.read() for f in files]
    return reviews.upload_corrected_seg(service, ingestor, run_id, contents, user=user.username)


def _check_review_task(task: str) -> None:
    if task != reviews.REVIEW_TASK:
        raise NotFound(f"task {task!r} is not a human step (only {reviews.REVIEW_TASK!r} is)")


# -- auto-rules ----------------------------------------------------------------------------


@router.get("/rules")
def list_rules(service: FlowServiceDep) -> list[RuleModel]:
    return rules.list_rules(service.db, scope=service.scope)


@router.post("/rules", status_code=status.HTTP_201_CREATED)
def add_rule(rule: RuleIn, service: FlowServiceDep, admin: AdminDep) -> RuleModel:
    """Start ``dag_id`` on every complete series that matches ``query`` (admins only)."""
    check_params(rule.params, service.workflow(rule.dag_id).params_schema)
    return rules.add_rule(service.db, rule, user=admin.username)


@router.get("/rules/{rule}")
def get_rule(rule: str, service: FlowServiceDep) -> RuleModel:
    return rules.get_rule(service.db, rules.find_rule_id(service.db, rule), scope=service.scope)


@router.patch("/rules/{rule}")
def set_rule_enabled(
    rule: str,
    service: FlowServiceDep,
    _admin: AdminDep,
    enabled: Annotated[bool, Body(embed=True)],
) -> RuleModel:
    return rules.set_enabled(service.db, rules.find_rule_id(service.db, rule), enabled)


@router.delete("/rules/{rule}", status_code=status.HTTP_204_NO_CONTENT)
def remove_rule(rule: str, service: FlowServiceDep, _admin: AdminDep) -> Response:
    rules.remove_rule(service.db, rules.find_rule_id(service.db, rule))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/rules/{rule}/firings")
def rule_firings(rule: str, service: FlowServiceDep) -> list[FiringModel]:
    """Which series fired the rule, and the run each started."""
    return rules.firings(service.db, rules.find_rule_id(service.db, rule), scope=service.scope)
