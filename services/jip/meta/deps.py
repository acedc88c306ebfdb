"""Typed dependencies of the META routes (FastAPI ``Annotated`` aliases).

The adapters come from ``request.app.state.runtime``, read through
:class:`MetaAdapters`, which the composition's runtime satisfies structurally: META
never imports the runtime that builds them.
"""

from __future__ import annotations

from typing import Annotated, Protocol

from fastapi import Depends, Request
from sqlalchemy import Engine

from jip.base import site_url
from jip.config import Settings
from jip.meta.cohorts import Cohorts
from jip.meta.index import MetaIndex
from jip.meta.limits import QueryLimits
from jip.meta.service import IndexLedger


class MetaAdapters(Protocol):
    """The settings and adapters META's routes read."""

    @property
    def settings(self) -> Settings: ...

    @property
    def engine(self) -> Engine: ...  # the catalog database (META's tables live there too)

    @property
    def index(self) -> MetaIndex: ...


def _adapters(request: Request) -> MetaAdapters:
    adapters: MetaAdapters = request.app.state.runtime
    return adapters


def get_index(request: Request) -> MetaIndex:
    return _adapters(request).index


def get_ledger(request: Request) -> IndexLedger:
    return IndexLedger(_adapters(request).engine)


def get_limits(request: Request) -> QueryLimits:
    return QueryLimits.of(_adapters(request).settings.meta)


def get_cohorts(request: Request) -> Cohorts:
    adapters = _adapters(request)
    return Cohorts(
        adapters.engine,
        adapters.index,
        site_url(adapters.settings),
        limits=QueryLimits.of(adapters.settings.meta),
    )


IndexDep = Annotated[MetaIndex, Depends(get_index)]
LedgerDep = Annotated[IndexLedger, Depends(get_ledger)]
CohortsDep = Annotated[Cohorts, Depends(get_cohorts)]
LimitsDep = Annotated[QueryLimits, Depends(get_limits)]
