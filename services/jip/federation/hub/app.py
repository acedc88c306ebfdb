"""The hub's HTTP API (its own FastAPI app; the contract is in the package docstring).

Three kinds of caller, three kinds of credential: a site enrolling (its one-time token,
no certificate yet), an enrolled site (the client certificate the hub's CA issued it,
verified by TLS and again here; the CN names the site), and a researcher (a bearer
token). Errors are ``jip.errors`` mapped in one handler.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from jip.errors import JipError, Unauthorized, status_for
from jip.federation.hub import jobs, registry, relay
from jip.federation.hub.home import Hub
from jip.federation.protocol import JobSpec, RoundRequest, SiteJobStatus, SiteResult

MAX_WAIT_S = 30.0
MAX_BODY_BYTES = 24 * 1024 * 1024  # a 16 MiB sealed result in base64, and its envelope
NO_CERTIFICATE = (
    "a client certificate from this hub's CA is needed: enrol the site (`jip fed join`)"
)
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]
]


class Notifier:
    """Wakes every long-poll when something new is queued (jobs, rounds)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def current(self) -> asyncio.Event:
        return self._event

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()


class EnrolRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    token: Annotated[str, Field(min_length=1, max_length=200)]
    csr_pem: Annotated[str, Field(min_length=1, max_length=16 * 1024)]
    identity_key: Annotated[str, Field(min_length=44, max_length=44)]
    box_key: Annotated[str, Field(min_length=44, max_length=44)]


def client_certificate(scope: Scope) -> str | None:
    """The PEM of the client certificate TLS verified, from the ASGI TLS extension
    (which :mod:`.server` fills in for uvicorn); None without one."""
    tls = scope.get("extensions", {}).get("tls") or {}
    chain = tls.get("client_cert_chain") or []
    return str(chain[0]) if chain else None


def _hub(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub


def current_site(request: Request) -> str:
    """The enrolled site whose certificate this connection presented."""
    pem = client_certificate(request.scope)
    if pem is None:
        raise Unauthorized(NO_CERTIFICATE)
    return registry.site_for_certificate(_hub(request), pem)


_bearer = HTTPBearer(auto_error=False)


def current_researcher(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    if credentials is None:
        raise Unauthorized("a researcher's bearer token is needed (`jip hub researcher add`)")
    return registry.researcher_for_token(_hub(request), credentials.credentials)


HubDep = Annotated[Hub, Depends(_hub)]
SiteDep = Annotated[str, Depends(current_site)]
ResearcherDep = Annotated[str, Depends(current_researcher)]


def _no_content() -> Response:
    return Response(status_code=204)


async def _error(_: Request, exc: Exception) -> JSONResponse:
    status = status_for(exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)


def _limit_body(app: ASGIApp) -> ASGIApp:
    """Refuse bodies over MAX_BODY_BYTES before reading them (enrolment is open to
    anyone who can connect); a body without a Content-Length must say its length."""

    async def limited(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] in {"POST", "PUT", "PATCH"}:
            headers = dict(scope.get("headers") or [])
            length = headers.get(b"content-length")
            status, detail = 0, ""
            if length is None and headers.get(b"transfer-encoding"):
                status, detail = 411, "send a Content-Length"
            elif length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
                status, detail = 413, f"the body is over the hub's limit of {MAX_BODY_BYTES} bytes"
            if status:
                await JSONResponse({"detail": detail}, status_code=status)(scope, receive, send)
                return
        await app(scope, receive, send)

    return limited


def create_app(hub: Hub) -> FastAPI:
    """The hub's app over an opened :class:`Hub`."""
    app = FastAPI(title="JIP federation hub", docs_url=None, redoc_url=None)
    app.state.hub = hub
    app.state.notifier = Notifier()
    app.add_exception_handler(JipError, _error)
    app.add_middleware(_BodyLimitMiddleware)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/api/enrol")
    def enrol(body: EnrolRequest, hub: HubDep) -> dict[str, str]:
        return registry.enrol(hub, body.token, body.csr_pem, body.identity_key, body.box_key)

    @app.get("/api/site/jobs")
    async def poll(
        request: Request,
        site: SiteDep,
        hub: HubDep,
        wait: Annotated[float, Query(ge=0)] = 0,
    ) -> dict[str, list[dict[str, Any]]]:
        notifier: Notifier = request.app.state.notifier
        loop = asyncio.get_running_loop()
        until = loop.time() + min(wait, MAX_WAIT_S)
        while True:
            woken = notifier.current()  # taken before the look, so no wake-up is lost
            found = await run_in_threadpool(relay.pending, hub, site)
            remaining = until - loop.time()
            if found["jobs"] or found["rounds"] or remaining <= 0:
                return found
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(woken.wait(), remaining)

    @app.post("/api/site/jobs/{job_id}/ack", status_code=204)
    def ack(
        job_id: str, site: SiteDep, hub: HubDep, round: Annotated[int, Query(ge=1)] = 1
    ) -> Response:
        relay.ack(hub, site, job_id, round)
        return _no_content()

    @app.post("/api/site/jobs/{job_id}/state", status_code=204)
    def state(job_id: str, body: SiteJobStatus, site: SiteDep, hub: HubDep) -> Response:
        relay.report_state(hub, site, job_id, body)
        return _no_content()

    @app.post("/api/site/jobs/{job_id}/results", status_code=204)
    def result(job_id: str, body: SiteResult, site: SiteDep, hub: HubDep) -> Response:
        relay.store_result(hub, site, job_id, body)
        return _no_content()

    @app.post("/api/jobs")
    async def submit(
        request: Request, body: JobSpec, researcher: ResearcherDep, hub: HubDep
    ) -> dict[str, str]:
        job_id = await run_in_threadpool(jobs.submit, hub, researcher, body)
        request.app.state.notifier.notify()
        return {"id": job_id}

    @app.get("/api/sites")
    def sites(researcher: ResearcherDep, hub: HubDep) -> list[dict[str, str]]:
        return registry.site_keys(hub)

    @app.get("/api/jobs/{job_id}")
    def job_status(job_id: str, researcher: ResearcherDep, hub: HubDep) -> dict[str, Any]:
        return jobs.status(hub, researcher, job_id)

    @app.get("/api/jobs/{job_id}/results")
    def job_results(
        job_id: str,
        researcher: ResearcherDep,
        hub: HubDep,
        round: Annotated[int | None, Query(ge=1)] = None,
    ) -> list[dict[str, Any]]:
        return [r.model_dump(mode="json") for r in jobs.results(hub, researcher, job_id, round)]

    @app.post("/api/jobs/{job_id}/rounds", status_code=204)
    async def add_round(
        request: Request, job_id: str, body: RoundRequest, researcher: ResearcherDep, hub: HubDep
    ) -> Response:
        await run_in_threadpool(jobs.add_round, hub, researcher, job_id, body)
        request.app.state.notifier.notify()
        return _no_content()

    return app


class _BodyLimitMiddleware:
    """Starlette middleware form of :func:`_limit_body`."""

    def __init__(self, app: ASGIApp) -> None:
        self._call = _limit_body(app)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        await self._call(scope, receive, send)
