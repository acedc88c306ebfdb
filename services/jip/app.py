"""build_app(runtime): the HTTP API of one site, with its routers, error map and probes.

Services raise :mod:`jip.errors`; this module alone turns them into HTTP responses.
Request bodies other than the streamed ones (STOW-RS, file uploads) are capped at
``http.max_json_body_bytes`` before any route reads them (:class:`BodyLimit`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from jip import errors, metrics
from jip.base.auth import require_token
from jip.base.routes import API_ROUTERS, PUBLIC_ROUTERS
from jip.edge import BodyLimit, RequestMetrics, TrustedProxies
from jip.flow.forwarding_routes import router as forwarding_router
from jip.flow.records import run_state_counts
from jip.flow.routes import router as flow_router
from jip.flow.run_download import router as run_download_router
from jip.meta.cohort_download import router as cohort_download_router
from jip.meta.cohort_routes import router as cohort_router
from jip.meta.routes import router as meta_router
from jip.runtime import Runtime
from jip.store.dicomweb.routes import router as dicomweb_router
from jip.store.dimse.pacs_routes import router as pacs_router
from jip.store.dimse.scu_routes import router as dicom_scu_router
from jip.store.forward_routes import router as dicom_send_router
from jip.store.projects_routes import router as projects_data_router
from jip.store.routes import router as store_router
from jip.store.upload_routes import router as upload_router
from jip.ui import (
    admin,
    admin_assignment,
    admin_peers,
    federation_admin,
    federation_policy,
    federation_studies,
    ohif,
    runs,
    series,
)
from jip.ui import download as ui_download
from jip.ui import upload as ui_upload
from jip.ui.chart_routes import router as chart_router
from jip.ui.forwarding import router as forwarding_ui_router
from jip.ui.pacs import router as pacs_ui_router
from jip.ui.routes import router as ui_router
from jip.ui.routes import templates
from jip.ui.status import router as site_status_router
from jip.ui.viewer import add_template_globals

log = logging.getLogger(__name__)


async def _jip_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.JipError)
    status = errors.status_for(exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)


ReadinessCheck = Callable[[], str | None]  # returns None when ready, else why not

# Every router of the site, in the order FastAPI matches them. Store's
# /api/projects/rules comes before BASE's /api/projects/{name}: "rules" is no project.
ROUTERS: list[APIRouter] = [
    store_router,
    upload_router,
    dicom_scu_router,
    pacs_router,
    dicom_send_router,
    projects_data_router,
    dicomweb_router,
    *PUBLIC_ROUTERS,
    *API_ROUTERS,
    meta_router,
    cohort_router,
    cohort_download_router,
    flow_router,
    forwarding_router,
    run_download_router,
    site_status_router,
    ui_router,
    admin.router,
    admin_peers.router,
    admin_assignment.router,
    federation_admin.router,
    federation_policy.router,
    federation_studies.router,
    series.router,
    runs.router,
    ui_upload.router,
    ui_download.router,
    forwarding_ui_router,
    pacs_ui_router,
    chart_router,
    ohif.router,  # /viewer: OHIF, checking the UI session itself
]

# The services of the cluster shape, each a Deployment of `jip up --role <group>`, and the
# routers each serves (charts/jip's Ingress routes by these prefixes). BASE holds
# /api/projects whole, store's project assignment included: one Ingress prefix.
ROUTER_GROUPS: dict[str, list[APIRouter]] = {
    "store": [
        store_router,
        upload_router,
        dicom_scu_router,
        pacs_router,
        dicom_send_router,
        dicomweb_router,
        ohif.router,  # /viewer reads DICOMweb in-process, so it lives beside it
    ],
    "meta": [meta_router, cohort_router, cohort_download_router],
    "flow": [flow_router, forwarding_router, run_download_router],
}
ROUTER_GROUPS["base"] = [
    r for r in ROUTERS if not any(r in group for group in ROUTER_GROUPS.values())
]


def build_app(
    runtime: Runtime,
    readiness: list[ReadinessCheck] | None = None,
    groups: Collection[str] | None = None,
) -> FastAPI:
    """The site's API; ``readiness`` checks gate ``/healthz`` and ``/readyz``; ``groups``
    (keys of :data:`ROUTER_GROUPS`) limits it to those services' routers (None: all)."""
    # Deny by default: with auth enabled every route, including those added below by any
    # service, needs a valid bearer token unless jip.base.auth names it public (probes,
    # /metrics, /auth/*, /.well-known/*).
    guard = [Depends(require_token)] if runtime.settings.auth.enabled else []
    app = FastAPI(
        title="JIP",
        version="0.1.0",
        docs_url="/api/docs",
        openapi_url="/api/openapi.json",
        dependencies=guard,
    )
    app.add_middleware(BodyLimit, max_bytes=runtime.settings.http.max_json_body_bytes)
    app.add_middleware(RequestMetrics)
    # Added last, so it runs first: proxy headers are judged before anything reads them.
    app.add_middleware(TrustedProxies, trusted=runtime.settings.http.trusted_proxies)
    app.state.runtime = runtime
    app.state.readiness = list(readiness or [])
    app.add_exception_handler(errors.JipError, _jip_error)
    served = ROUTERS if groups is None else [r for g in groups for r in ROUTER_GROUPS[g]]
    for router in ROUTERS:  # in ROUTERS' order, whatever the groups
        if router in served:
            app.include_router(router)
    add_template_globals(templates.env)

    def not_ready() -> list[str]:
        return [reason for check in app.state.readiness if (reason := check()) is not None]

    def probe(reasons: list[str]) -> JSONResponse:
        body = {"status": "ok" if not reasons else "not ready", "waiting_for": reasons}
        return JSONResponse(body, status_code=200 if not reasons else 503)

    app.state.started = False

    @app.get("/healthz", tags=["probes"], include_in_schema=False)
    def healthz() -> JSONResponse:
        """503 until every part was ready once, then 200 while the process lives.

        `jip up` users wait on it; as a liveness probe it does not restart a pod
        because a dependency (database, Airflow) is briefly away: that is /readyz.
        """
        if app.state.started:
            return probe([])
        reasons = not_ready()
        app.state.started = not reasons
        return probe(reasons)

    @app.get("/readyz", tags=["probes"], include_in_schema=False)
    def readyz() -> JSONResponse:
        """Whether every part is ready now (readiness probe)."""
        return probe(not_ready())

    metrics.register_gauge(
        "jip_flow_runs",
        "Workflow runs JIP started, by state.",
        "state",
        lambda: run_state_counts(runtime.engine),
    )
    shared_metrics = metrics.shared_dir(runtime.settings.data_dir)

    @app.get("/metrics", tags=["probes"], include_in_schema=False)
    def prometheus_metrics() -> PlainTextResponse:
        """Prometheus text format: this process and the DICOM listener processes."""
        body = metrics.exposition(shared_metrics).decode()
        return PlainTextResponse(body, media_type=metrics.CONTENT_TYPE)

    return app
