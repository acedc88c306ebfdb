"""``GET /api/admin/status``: the site at a glance, for the admin overview page.

One call gathers what an admin checks first when something looks wrong: how much is
catalogued, where it is kept, whether indexing keeps up, what failed, and which part is
not ready. Locations are shown without credentials. Everything is read from the site's
adapters in the runtime: the catalog's read methods, the index port, the workflow engine.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

from fastapi import APIRouter, Request
from pydantic import BaseModel
from sqlalchemy.engine import make_url

from jip.base import AdminDep
from jip.errors import JipError
from jip.runtime import Runtime

router = APIRouter(prefix="/api/admin", tags=["admin"])


class Backend(BaseModel):
    kind: str  # the URL scheme: file, s3, sqlite, postgresql, https
    location: str  # the URL without password and query


class CatalogCounts(BaseModel):
    patients: int
    studies: int
    series: int
    instances: int
    bytes: int


class IndexState(BaseModel):
    pending: int  # the outbox: instances not yet indexed
    failed: int  # headers that could not be indexed (/api/meta/errors)
    documents: int


class Component(BaseModel):
    name: str
    ready: bool
    detail: str = ""


class Airflow(BaseModel):
    enabled: bool
    reachable: bool
    health: dict[str, str]
    detail: str = ""


class SiteStatus(BaseModel):
    catalog: CatalogCounts
    conflicts: int
    catalog_backend: Backend
    storage_backend: Backend
    index_backend: Backend
    index: IndexState
    ready: bool
    components: list[Component]
    airflow: Airflow


@router.get("/status")
def site_status(request: Request, _admin: AdminDep) -> SiteStatus:
    """Counts, backends, indexing backlog, conflicts, readiness and Airflow (site admins)."""
    runtime: Runtime = request.app.state.runtime
    settings = runtime.settings
    counts = runtime.catalog.counts()
    # What meta's IndexLedger.progress reports for the whole site: the catalog's outbox
    # (instances not yet indexed, and those that failed) and the index's documents.
    pending, failed = runtime.catalog.outbox_counts()
    components = [_component(check) for check in request.app.state.readiness]
    return SiteStatus(
        catalog=CatalogCounts(
            **{k: counts[k] for k in ("patients", "studies", "series", "instances")},
            bytes=runtime.catalog.stored_bytes(),
        ),
        conflicts=counts["conflicts"],
        catalog_backend=backend(settings.resolved_catalog_url),
        storage_backend=backend(settings.resolved_storage_url),
        index_backend=backend(settings.resolved_index_url),
        index=IndexState(pending=pending, failed=failed, documents=runtime.index.count()),
        ready=all(c.ready for c in components),
        components=components,
        airflow=_airflow(runtime),
    )


def backend(url: str) -> Backend:
    """The URL's scheme and the URL without credentials (``s3://`` keys, DB passwords)."""
    if url.startswith(("sqlite", "postgresql")):
        parsed = make_url(url)
        return Backend(
            kind=parsed.get_backend_name(),
            location=parsed.set(password=None, query={}).render_as_string(hide_password=True),
        )
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return Backend(
        kind=parts.scheme, location=urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    )


def _component(check: Callable[[], str | None]) -> Component:
    # app.state.readiness holds each component's bound ``not_ready``: its owner names it.
    owner = getattr(check, "__self__", None)
    name = str(getattr(owner, "name", getattr(check, "__name__", "check")))
    reason = check()
    # A component may be ready and still have something to say (the federation agent's
    # last failure to reach its hub: not a reason to fail /healthz).
    describe = getattr(owner, "describe", None)
    described = describe() if callable(describe) else {}
    last_error = described.get("last_error") if isinstance(described, dict) else None
    detail = reason or (f"last error: {last_error}" if last_error else "")
    return Component(name=name, ready=reason is None, detail=detail)


def _airflow(runtime: Runtime) -> Airflow:
    if not runtime.settings.flow.airflow_enabled:
        return Airflow(
            enabled=False, reachable=False, health={}, detail="disabled (flow.airflow_enabled)"
        )
    try:
        health = dict(runtime.workflow_engine.health())
    except JipError as exc:
        return Airflow(enabled=True, reachable=False, health={}, detail=str(exc))
    return Airflow(enabled=True, reachable=True, health=health)
