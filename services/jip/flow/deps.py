"""Typed dependencies of the flow routes (FastAPI ``Annotated`` aliases).

The adapters come from ``request.app.state.runtime``, read through
:class:`FlowAdapters` (``jip.runtime.Runtime`` satisfies it): the workflow engine and the
result store are opened there on first use, and tests set fakes on the runtime
(``runtime.workflow_engine = FakeEngine(...)``) before the first request. Saved cohort
ids resolve through meta's cohorts, as the caller sees them.
"""

from __future__ import annotations

from typing import Annotated, Protocol

from fastapi import Depends, Request
from sqlalchemy import Engine

from jip.base import CurrentUser, CurrentUserDep, Identity, project_scope, site_url
from jip.config import Settings
from jip.flow.engine import WorkflowEngine
from jip.flow.run_tokens import RunTokenPolicy
from jip.flow.service import CohortResolver, FlowService
from jip.flow.worker.runner import operators_dir
from jip.meta import Cohorts, MetaIndex
from jip.store import BlobStorage


class FlowAdapters(Protocol):
    """What the flow routes need of the site's adapters."""

    @property
    def settings(self) -> Settings: ...

    @property
    def engine(self) -> Engine: ...

    @property
    def index(self) -> MetaIndex: ...

    @property
    def workflow_engine(self) -> WorkflowEngine: ...

    @property
    def results(self) -> BlobStorage: ...

    @property
    def identity(self) -> Identity: ...


def _adapters(request: Request) -> FlowAdapters:
    adapters: FlowAdapters = request.app.state.runtime
    return adapters


def get_workflow_engine(request: Request) -> WorkflowEngine:
    return _adapters(request).workflow_engine


def get_results_storage(request: Request) -> BlobStorage:
    return _adapters(request).results


def get_flow_service(
    request: Request,
    engine: Annotated[WorkflowEngine, Depends(get_workflow_engine)],
    user: CurrentUserDep,
) -> FlowService:
    adapters = _adapters(request)
    return FlowService(
        db=adapters.engine,
        engine=engine,
        operators_dir=operators_dir(adapters.settings),
        cohorts=_cohorts_of(adapters, user),
        scope=project_scope(user),
        caller=user,
        tokens=RunTokenPolicy.from_settings(adapters.settings, adapters.identity),
    )


def _cohorts_of(adapters: FlowAdapters, user: CurrentUser) -> CohortResolver:
    """Saved cohorts as the caller sees them (only those of the caller's projects)."""

    def resolve(cohort_id: str) -> list[str]:
        cohorts = Cohorts(adapters.engine, adapters.index, site_url(adapters.settings))
        return cohorts.series_uids(user, cohort_id)

    return resolve


FlowServiceDep = Annotated[FlowService, Depends(get_flow_service)]
ResultsStorageDep = Annotated[BlobStorage, Depends(get_results_storage)]
