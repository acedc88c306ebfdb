"""`WorkflowEngine` on Apache Airflow 3, through its REST API (v2) only.

Airflow's runs, task instances and their states become JIP's (:mod:`jip.flow.engine`);
signing in, paging and turning Airflow's errors into `jip.errors` is
:class:`jip.flow.airflow_rest.AirflowRest`'s job.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

import httpx

from jip.config import Settings
from jip.errors import Conflict, Invalid, NotFound, Unavailable
from jip.flow.airflow_home import api_url, read_password
from jip.flow.airflow_rest import (
    AirflowRest,
    Password,
    dag_path,
    run_path,
    run_what,
    seg,
    ti_path,
    ti_what,
)
from jip.flow.engine import RunState, TaskInstance, TaskState, WorkflowInfo, WorkflowRun
from jip.flow.workflows import run_token_conn_id

log = logging.getLogger(__name__)

# Airflow has no "cancelled" run state; a run JIP cancels is failed with this note.
CANCEL_NOTE = "Cancelled through JIP."

_RUN_STATES = {
    "queued": RunState.QUEUED,
    "running": RunState.RUNNING,
    "success": RunState.SUCCESS,
    "failed": RunState.FAILED,
}
_TASK_STATES = {
    None: TaskState.PENDING,
    "scheduled": TaskState.QUEUED,
    "queued": TaskState.QUEUED,
    "running": TaskState.RUNNING,
    "restarting": TaskState.RUNNING,
    "deferred": TaskState.WAITING,
    "up_for_reschedule": TaskState.WAITING,
    "awaiting_input": TaskState.WAITING,
    "up_for_retry": TaskState.RETRYING,
    "success": TaskState.SUCCESS,
    "failed": TaskState.FAILED,
    "upstream_failed": TaskState.UPSTREAM_FAILED,
    "skipped": TaskState.SKIPPED,
    "removed": TaskState.REMOVED,
}
# The states Airflow lets a user set on a task instance.
_SETTABLE_TASK_STATES = frozenset({TaskState.SUCCESS, TaskState.FAILED, TaskState.SKIPPED})
_HEALTH_COMPONENTS = ("metadatabase", "scheduler", "dag_processor", "triggerer")


class AirflowEngine:
    """Talks to one Airflow API server as one user; safe to share between threads."""

    def __init__(
        self,
        base_url: str,
        *,
        username: str,
        password: Password,
        timeout_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.rest = AirflowRest(
            base_url, username=username, password=password, timeout_s=timeout_s, transport=transport
        )

    @property
    def base_url(self) -> str:
        return self.rest.base_url

    @property
    def username(self) -> str:
        return self.rest.username

    @classmethod
    def from_settings(cls, settings: Settings) -> AirflowEngine:
        flow = settings.flow
        home = settings.resolved_airflow_home
        password: Password = flow.airflow_password or (
            lambda: read_password(home, flow.airflow_username)
        )
        return cls(api_url(settings), username=flow.airflow_username, password=password)

    def close(self) -> None:
        self.rest.close()

    # -- health ----------------------------------------------------------------------

    def health(self) -> dict[str, str]:
        body = self.rest.health()
        result: dict[str, str] = {}
        for name in _HEALTH_COMPONENTS:
            entry = body.get(name)
            status = entry.get("status") if isinstance(entry, dict) else None
            result[name] = status if isinstance(status, str) else "unknown"
        return result

    def healthy(self) -> bool:
        try:
            return all(status == "healthy" for status in self.health().values())
        except Unavailable:
            return False

    # -- workflows -------------------------------------------------------------------

    def list_workflows(self) -> list[WorkflowInfo]:
        dags = self.rest.paged("/api/v2/dags", "dags", {"order_by": "dag_id"}, what="workflows")
        return [self.get_workflow(dag["dag_id"]) for dag in dags]

    def get_workflow(self, dag_id: str) -> WorkflowInfo:
        body = self.rest.call("GET", f"{dag_path(dag_id)}/details", what=f"workflow {dag_id!r}")
        return WorkflowInfo(
            dag_id=body["dag_id"],
            description=body.get("description"),
            params_schema=_params_schema(body.get("params")),
            tags=tuple(sorted(tag["name"] for tag in body.get("tags") or [])),
            paused=bool(body.get("is_paused")),
        )

    # -- runs ------------------------------------------------------------------------

    def trigger(
        self, dag_id: str, conf: Mapping[str, Any], run_id: str | None = None
    ) -> WorkflowRun:
        body: dict[str, Any] = {"logical_date": None, "conf": dict(conf)}
        if run_id is not None:
            body["dag_run_id"] = run_id
        answer = self.rest.call(
            "POST", f"{dag_path(dag_id)}/dagRuns", json=body, what=f"workflow {dag_id!r}"
        )
        run = _run(answer)
        log.info("workflow run started", extra={"dag_id": dag_id, "run_id": run.run_id})
        return run

    def get_run(self, dag_id: str, run_id: str) -> WorkflowRun:
        return _run(self.rest.call("GET", run_path(dag_id, run_id), what=run_what(dag_id, run_id)))

    def list_runs(self, dag_id: str | None = None, limit: int = 50) -> list[WorkflowRun]:
        if limit < 1:
            raise Invalid(f"limit must be at least 1, not {limit}")
        path = f"{dag_path(dag_id or '~')}/dagRuns"
        what = f"runs of workflow {dag_id!r}" if dag_id else "workflow runs"
        runs = self.rest.paged(path, "dag_runs", {"order_by": "-id"}, what=what, limit=limit)
        return [_run(run) for run in runs]

    def cancel(self, dag_id: str, run_id: str) -> WorkflowRun:
        run = self.get_run(dag_id, run_id)
        if run.state.finished:
            raise Conflict(
                f"run {run_id!r} of workflow {dag_id!r} has already finished ({run.state})"
            )
        # Failing the run fails its running task instances (their processes are
        # stopped at their next heartbeat) and skips the ones not started yet.
        answer = self.rest.call(
            "PATCH",
            run_path(dag_id, run_id),
            json={"state": "failed", "note": CANCEL_NOTE},
            what=run_what(dag_id, run_id),
        )
        log.info("workflow run cancelled", extra={"dag_id": dag_id, "run_id": run_id})
        return _run(answer)

    # -- task instances --------------------------------------------------------------

    def task_instances(self, dag_id: str, run_id: str) -> list[TaskInstance]:
        # The run's list holds every mapped instance, one per map index.
        self.get_run(dag_id, run_id)  # an unknown run is a 404 here, an empty list below
        items = self.rest.paged(
            f"{run_path(dag_id, run_id)}/taskInstances",
            "task_instances",
            {"order_by": "map_index"},
            what=run_what(dag_id, run_id),
        )
        return sorted((_task(ti) for ti in items), key=lambda ti: (ti.task_id, ti.map_index))

    def get_task_instance(
        self, dag_id: str, run_id: str, task_id: str, map_index: int = -1
    ) -> TaskInstance:
        answer = self.rest.call(
            "GET",
            ti_path(dag_id, run_id, task_id, map_index),
            what=ti_what(dag_id, run_id, task_id, map_index),
        )
        return _task(answer)

    def task_log(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        map_index: int = -1,
        try_number: int | None = None,
    ) -> str:
        if try_number is None:
            try_number = self.get_task_instance(dag_id, run_id, task_id, map_index).try_number
            if try_number < 1:
                return ""  # not started yet: no log
        answer = self.rest.call(
            "GET",
            f"{run_path(dag_id, run_id)}/taskInstances/{seg(task_id)}/logs/{try_number}",
            params={"map_index": map_index, "full_content": "true"},
            headers={"Accept": "application/json"},
            what=ti_what(dag_id, run_id, task_id, map_index) + f" try {try_number}",
        )
        return _log_text(answer.get("content") or [])

    def set_task_state(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        state: TaskState,
        map_index: int = -1,
    ) -> TaskInstance:
        if state not in _SETTABLE_TASK_STATES:
            allowed = ", ".join(sorted(_SETTABLE_TASK_STATES))
            raise Invalid(f"a task instance can be set to {allowed}, not {state}")
        what = ti_what(dag_id, run_id, task_id, map_index)
        self.rest.call(
            "PATCH",
            ti_path(dag_id, run_id, task_id, map_index),
            json={"new_state": state.value},
            what=what,
        )
        log.info(
            "task state set",
            extra={"dag_id": dag_id, "run_id": run_id, "task_id": task_id, "state": str(state)},
        )
        return self.get_task_instance(dag_id, run_id, task_id, map_index)

    # -- the run's own token ---------------------------------------------------------

    def put_run_token(self, run_id: str, token: str) -> None:
        # A Connection, not the run's conf: conf is shown to anyone who can read the run
        # in Airflow and stored in its trigger table; a connection's password is masked
        # in logs and read by tasks and triggers through Airflow's secrets lookup.
        conn_id = run_token_conn_id(run_id)
        body = {
            "connection_id": conn_id,
            "conn_type": "generic",
            "description": f"JIP run {run_id}: its own API token (removed when it ends)",
            "password": token,
        }
        what = f"connection {conn_id!r}"
        try:
            self.rest.call("POST", "/api/v2/connections", json=body, what=what)
        except Conflict:  # a retried start: replace it
            self.rest.call("PATCH", f"/api/v2/connections/{seg(conn_id)}", json=body, what=what)

    def remove_run_token(self, run_id: str) -> None:
        conn_id = run_token_conn_id(run_id)
        with contextlib.suppress(NotFound):  # none, or removed already
            self.rest.call(
                "DELETE", f"/api/v2/connections/{seg(conn_id)}", what=f"connection {conn_id!r}"
            )


# -- Airflow JSON -> JIP values ---------------------------------------------------------


def _run(body: Mapping[str, Any]) -> WorkflowRun:
    state = _RUN_STATES.get(body.get("state") or "", RunState.QUEUED)
    note = body.get("note")
    if state is RunState.FAILED and note == CANCEL_NOTE:
        state = RunState.CANCELLED
    return WorkflowRun(
        dag_id=body["dag_id"],
        run_id=body["dag_run_id"],
        state=state,
        conf=body.get("conf") or {},
        queued_at=_time(body.get("queued_at")),
        started_at=_time(body.get("start_date")),
        ended_at=_time(body.get("end_date")),
        note=note,
    )


def _task(body: Mapping[str, Any]) -> TaskInstance:
    raw_state = body.get("state")
    state = _TASK_STATES.get(raw_state)
    if state is None:
        log.warning("unknown Airflow task state", extra={"state": raw_state})
        state = TaskState.PENDING
    return TaskInstance(
        task_id=body["task_id"],
        state=state,
        map_index=int(body.get("map_index", -1)),
        label=body.get("rendered_map_index"),
        try_number=int(body.get("try_number") or 0),
        started_at=_time(body.get("start_date")),
        ended_at=_time(body.get("end_date")),
    )


def _params_schema(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """A JSON Schema object from Airflow's params (``{name: {value, schema, description}}``)."""
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, spec in (params or {}).items():
        schema = dict(spec.get("schema") or {})
        if spec.get("description") and "description" not in schema:
            schema["description"] = spec["description"]
        # Airflow reports a missing or invalid default as null; a null the schema
        # allows is a real default.
        value = spec.get("value")
        if value is not None or _allows_null(schema):
            schema.setdefault("default", value)
        else:
            required.append(name)
        properties[name] = schema
    schema_object: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema_object["required"] = required
    return schema_object


def _allows_null(schema: Mapping[str, Any]) -> bool:
    kind = schema.get("type")
    return kind == "null" or (isinstance(kind, list) and "null" in kind)


def _log_text(content: list[Any]) -> str:
    return "\n".join(_log_lines(content))


def _log_lines(content: list[Any]) -> Iterator[str]:
    for entry in content:
        if isinstance(entry, str):
            yield entry
            continue
        event = str(entry.get("event", ""))
        if event.startswith("::"):  # UI grouping markers
            continue
        stamp, level = entry.get("timestamp"), entry.get("level")
        prefix = " ".join(str(part) for part in (stamp, level and level.upper()) if part)
        yield f"{prefix} {event}" if prefix else event
        for error in entry.get("error_detail") or []:
            yield from _error_lines(error)


def _error_lines(error: Mapping[str, Any]) -> Iterator[str]:
    yield "Traceback (most recent call last):"
    for frame in error.get("frames") or []:
        yield f'  File "{frame.get("filename")}", line {frame.get("lineno")}, in {frame.get("name")}'
    yield f"{error.get('exc_type')}: {error.get('exc_value')}"


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None
