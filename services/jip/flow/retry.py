"""Retry the failed series of a run: a new run of the same workflow on those series only.

Why a new run and not Airflow's "clear failed tasks" in place: when a run ends its
teardown removes the run's work folders (the staged input a later step reads) and its
token is revoked, so clearing only the failed step would find no input and no token.
A new run stages afresh, gets a token of its own, keeps the first run's results and
logs as they were, and is linked to it through its conf (``jip_retry_of``) so both
pages point at each other.
"""

from __future__ import annotations

from jip.errors import Conflict, Invalid
from jip.flow.engine import RunState, TaskState
from jip.flow.models import RunModel, StartRun
from jip.flow.service import RETRY_OF_KEY, FlowService

# Series in these states are retried; the others succeeded (or were skipped on purpose).
RETRIED_STATES = frozenset({TaskState.FAILED, TaskState.UPSTREAM_FAILED})


def retry_failed(service: FlowService, run_id: str, *, user: str) -> RunModel:
    """Start the run's workflow again, with its parameters, on its failed series only.

    Needs what cancelling needs (the researcher role in each of the run's projects)
    and what starting needs (the role in a project of each series). A run still under
    way, or without a failed series, is refused with what to do instead.
    """
    dag_id, record = service.locate(run_id)
    service.require_writer(run_id, record)
    detail = service.run(run_id)
    if not detail.state.finished:
        raise Conflict(
            f"run {run_id!r} is {detail.state.value}; wait for it to end (or cancel it) "
            "before retrying its failed series"
        )
    if detail.state is RunState.FAILED and not detail.tasks:  # never got going: all of it
        series = list(detail.series)
    else:
        series = [r.series_instance_uid for r in detail.per_series if r.state in RETRIED_STATES]
    if not series:
        raise Invalid(f"run {run_id!r} has no failed series to retry")
    params = record.params if record is not None else detail.params
    return service.start(
        dag_id,
        StartRun(series=series, params=params),
        user=user,
        extra_conf={RETRY_OF_KEY: run_id},
    )
