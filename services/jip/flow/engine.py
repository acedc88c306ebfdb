"""The workflow engine port: what JIP needs from Airflow, in JIP's own types.

Routes, auto-rules and the federation agent talk to a `WorkflowEngine`; only
`engine_airflow.py` knows Airflow's REST API. A workflow is a DAG (`dags/<dag_id>.py`),
a run is one DAG run, and a mapped task has one instance per series (``map_index``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable


class RunState(StrEnum):
    """Where a workflow run stands."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    # Failed on purpose: a user or JIP stopped it.
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in _FINISHED_RUN_STATES


_FINISHED_RUN_STATES = frozenset({RunState.SUCCESS, RunState.FAILED, RunState.CANCELLED})


class TaskState(StrEnum):
    """Where one task instance stands (one series of a mapped task, or a plain task)."""

    # Not scheduled yet: upstream tasks are still running.
    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    # Waiting for something outside: a person (a human step), a sensor, a trigger.
    WAITING = "waiting"
    # Failed, will be tried again.
    RETRYING = "retrying"
    SUCCESS = "success"
    FAILED = "failed"
    # Not run because an upstream task failed.
    UPSTREAM_FAILED = "upstream_failed"
    SKIPPED = "skipped"
    # The task disappeared from the workflow after the run started.
    REMOVED = "removed"

    @property
    def finished(self) -> bool:
        return self in _FINISHED_TASK_STATES


_FINISHED_TASK_STATES = frozenset(
    {
        TaskState.SUCCESS,
        TaskState.FAILED,
        TaskState.UPSTREAM_FAILED,
        TaskState.SKIPPED,
        TaskState.REMOVED,
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowInfo:
    """A workflow that can be started, with the JSON Schema of its parameters."""

    dag_id: str
    description: str | None = None
    # JSON Schema of an object whose properties are the DAG's `params`; defaults included.
    params_schema: Mapping[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    paused: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowRun:
    """One run of a workflow."""

    dag_id: str
    run_id: str
    state: RunState
    conf: Mapping[str, Any] = field(default_factory=dict)
    queued_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    note: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskInstance:
    """One task of one run; mapped tasks have one instance per ``map_index`` (per series)."""

    task_id: str
    state: TaskState
    # -1 for a task that is not mapped.
    map_index: int = -1
    # What a mapped instance works on (the series UID) when the DAG sets a
    # map_index_template; Airflow renders it when the instance ends.
    label: str | None = None
    # 1 for the first try; 0 before the first try started.
    try_number: int = 0
    started_at: datetime | None = None
    ended_at: datetime | None = None


@runtime_checkable
class WorkflowEngine(Protocol):
    """Starts workflow runs and reports their state and logs.

    Every method raises `jip.errors.NotFound` for an unknown workflow, run or task,
    `Invalid` for conf the workflow's params reject, `Conflict` for a change the run's
    state forbids, and `Unavailable` when the engine cannot be reached.
    """

    def healthy(self) -> bool:
        """True when the engine can start and run workflows now."""
        ...

    def close(self) -> None:
        """Release the engine's connections."""
        ...

    def health(self) -> Mapping[str, str]:
        """Each engine component and its status ("healthy", "unhealthy", "unknown")."""
        ...

    def list_workflows(self) -> list[WorkflowInfo]:
        """Every workflow the engine has loaded, sorted by id."""
        ...

    def get_workflow(self, dag_id: str) -> WorkflowInfo: ...

    def trigger(
        self, dag_id: str, conf: Mapping[str, Any], run_id: str | None = None
    ) -> WorkflowRun:
        """Start a run now; the engine names it unless ``run_id`` is given."""
        ...

    def get_run(self, dag_id: str, run_id: str) -> WorkflowRun: ...

    def list_runs(self, dag_id: str | None = None, limit: int = 50) -> list[WorkflowRun]:
        """The newest runs first, of one workflow or of all."""
        ...

    def task_instances(self, dag_id: str, run_id: str) -> list[TaskInstance]:
        """Every task instance of a run, mapped ones one per map index."""
        ...

    def get_task_instance(
        self, dag_id: str, run_id: str, task_id: str, map_index: int = -1
    ) -> TaskInstance: ...

    def task_log(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        map_index: int = -1,
        try_number: int | None = None,
    ) -> str:
        """The log text of one try (the latest when ``try_number`` is None)."""
        ...

    def cancel(self, dag_id: str, run_id: str) -> WorkflowRun:
        """Stop a run: running tasks are stopped, pending ones skipped, the run cancelled."""
        ...

    def set_task_state(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        state: TaskState,
        map_index: int = -1,
    ) -> TaskInstance:
        """Mark one task instance done by hand, e.g. a waiting human step as SUCCESS.

        Only SUCCESS, FAILED and SKIPPED can be set.
        """
        ...

    def put_run_token(self, run_id: str, token: str) -> None:
        """Keep the run's own API token where its tasks and triggers find it, outside the
        run's conf (Airflow: the Connection ``jip_run_<run_id>``, password = token)."""
        ...

    def remove_run_token(self, run_id: str) -> None:
        """Forget the run's token (the run ended); nothing happens when there is none."""
        ...
