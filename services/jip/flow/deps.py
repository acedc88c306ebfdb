"""Typed dependencies of the flow routes (FastAPI ``Annotated`` aliases).

The workflow engine and the result store are built on first use and kept on
``app.state`` (``flow_engine``, ``flow_results``); tests put fakes there before the first
request. Saved cohort ids resolve through meta's cohorts, as the caller sees them
(``app.state.flow_cohorts`` may hold another resolver).
"""

from __future__ import annotations

import threading
from typing import Annotated

from fastapi import Depends, Request

from jip.backends import storage_for
from jip.base.auth import CurrentUser, project_scope
from jip.base.deps import CurrentUserDep
from jip.flow.engine import WorkflowEngine
from jip.flow.service import CohortResolver, FlowService
from jip.flow.worker.runner import operators_dir
from jip.runtime import Runtime
from jip.store.storage.port import BlobStorage

_lock = threading.Lock()


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def get_workflow_engine(request: Request) -> WorkflowEngine:
    state = request.app.state
    with _lock:
        if getattr(state, "flow_engine", None) is None:
            from jip.flow.engine_airflow import AirflowEngine

            state.flow_engine = AirflowEngine.from_settings(_runtime(request).settings)
    engine: WorkflowEngine = state.flow_engine
    return engine


def get_results_storage(request: Request) -> BlobStorage:
    state = request.app.state
    with _lock:
        if getattr(state, "flow_results", None) is None:
            settings = _runtime(request).settings
            state.flow_results = storage_for(settings.resolved_results_url, settings)
    storage: BlobStorage = state.flow_results
    return storage


def get_flow_service(
    request: Request,
    engine: Annotated[WorkflowEngine, Depends(get_workflow_engine)],
    user: CurrentUserDep,
) -> FlowService:
    runtime = _runtime(request)
    return FlowService(
        db=runtime.engine,
        engine=engine,
        operators_dir=operators_dir(runtime.settings),
        cohorts=getattr(request.app.state, "flow_cohorts", None) or _cohorts_of(runtime, user),
        scope=project_scope(user),
    )


def _cohorts_of(runtime: Runtime, user: CurrentUser) -> CohortResolver:
    """Saved cohorts as the caller sees them (only those of the caller's projects)."""

    def resolve(cohort_id: str) -> list[str]:
        from jip.base.identity import site_url
        from jip.meta.cohorts import Cohorts

        cohorts = Cohorts(runtime.engine, runtime.index, site_url(runtime.settings))
        return cohorts.series_uids(user, cohort_id)

    return resolve


def caller_token(request: Request) -> str | None:
    """The caller's bearer token, handed to the run's tasks to reach the API as the caller."""
    if not _runtime(request).settings.auth.enabled:
        return None
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


FlowServiceDep = Annotated[FlowService, Depends(get_flow_service)]
ResultsStorageDep = Annotated[BlobStorage, Depends(get_results_storage)]
CallerTokenDep = Annotated[str | None, Depends(caller_token)]
