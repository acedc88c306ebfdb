"""Typed dependencies of the META routes (FastAPI ``Annotated`` aliases)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from jip.base.identity import site_url
from jip.meta.cohorts import Cohorts
from jip.meta.index import MetaIndex
from jip.meta.service import IndexLedger
from jip.runtime import Runtime


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def get_index(request: Request) -> MetaIndex:
    return _runtime(request).index


def get_ledger(request: Request) -> IndexLedger:
    return IndexLedger(_runtime(request).engine)


def get_cohorts(request: Request) -> Cohorts:
    runtime = _runtime(request)
    return Cohorts(runtime.engine, runtime.index, site_url(runtime.settings))


IndexDep = Annotated[MetaIndex, Depends(get_index)]
LedgerDep = Annotated[IndexLedger, Depends(get_ledger)]
CohortsDep = Annotated[Cohorts, Depends(get_cohorts)]
