"""An in-memory `WorkflowEngine` for tests of the flow service and routes (no Airflow).

It keeps the port's promises as `jip.flow.engine_airflow.AirflowEngine` does (the same
errors, conf checked against the workflow's params, cancel stopping the run's tasks):
tests/flow/test_engine_contract.py runs the same tests on both.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import jsonschema

from jip.errors import Conflict, Invalid, NotFound, Unavailable
from jip.flow.engine import RunState, TaskInstance, TaskState, WorkflowInfo, WorkflowRun

# What Airflow lets a user set on a task instance.
SETTABLE_TASK_STATES = frozenset({TaskState.SUCCESS, TaskState.FAILED, TaskState.SKIPPED})
# Task states Airflow fails when a run is failed (cancelled); other unfinished ones are skipped.
_STOPPED_BY_CANCEL = frozenset({TaskState.RUNNING, TaskState.WAITING})


def series_workflow(dag_id: str, *operators: str, review: bool = False) -> WorkflowInfo:
    """A workflow as `jip.flow.worker.tasks.workflow_params` declares it."""
    properties: dict[str, Any] = {
        "series": {"type": "array", "items": {"type": "string"}, "default": []}
    }
    for name in operators:
        properties[name] = {"type": "object", "x-jip-operator": name, "default": {}}
    return WorkflowInfo(
        dag_id=dag_id,
        description=f"{dag_id} (fake)",
        params_schema={"type": "object", "properties": properties},
        tags=("jip", "review") if review else ("jip",),
    )


def _now() -> datetime:
    return datetime.now(UTC)


class FakeEngine:
    """Runs do nothing by themselves; tests set task instances and states."""

    def __init__(self, *workflows: WorkflowInfo) -> None:
        self.workflows = {w.dag_id: w for w in workflows}
        self.runs: dict[str, WorkflowRun] = {}
        self.tasks: dict[str, list[TaskInstance]] = {}
        self.logs: dict[tuple[str, str, int], str] = {}
        self.available = True
        # What Airflow keeps as Connections jip_run_<run_id>: each run's own token.
        self.run_tokens: dict[str, str] = {}
        self._counter = itertools.count(1)

    def _check(self) -> None:
        if not self.available:
            raise Unavailable("fake engine is down")

    def healthy(self) -> bool:
        return self.available

    def close(self) -> None:
        """Nothing to release: the fake holds no connections."""

    def health(self) -> Mapping[str, str]:
        self._check()
        return {"scheduler": "healthy"}

    def list_workflows(self) -> list[WorkflowInfo]:
        self._check()
        return [self.workflows[k] for k in sorted(self.workflows)]

    def get_workflow(self, dag_id: str) -> WorkflowInfo:
        self._check()
        try:
            return self.workflows[dag_id]
        except KeyError:
            raise NotFound(f"workflow {dag_id!r} not found") from None

    def trigger(
        self, dag_id: str, conf: Mapping[str, Any], run_id: str | None = None
    ) -> WorkflowRun:
        _check_conf(self.get_workflow(dag_id).params_schema, conf)
        run_id = run_id or f"manual__{next(self._counter)}"
        if run_id in self.runs:
            raise Conflict(f"run {run_id!r} of workflow {dag_id!r} already exists")
        run = WorkflowRun(
            dag_id=dag_id, run_id=run_id, state=RunState.QUEUED, conf=dict(conf), queued_at=_now()
        )
        self.runs[run_id] = run
        self.tasks[run_id] = []
        return run

    def get_run(self, dag_id: str, run_id: str) -> WorkflowRun:
        self._check()
        run = self.runs.get(run_id)
        if run is None or run.dag_id != dag_id:
            raise NotFound(f"run {run_id!r} of workflow {dag_id!r} not found")
        return run

    def list_runs(self, dag_id: str | None = None, limit: int = 50) -> list[WorkflowRun]:
        self._check()
        if limit < 1:
            raise Invalid(f"limit must be at least 1, not {limit}")
        runs = [r for r in reversed(self.runs.values()) if dag_id in (None, r.dag_id)]
        return runs[:limit]

    def task_instances(self, dag_id: str, run_id: str) -> list[TaskInstance]:
        self.get_run(dag_id, run_id)
        return sorted(self.tasks[run_id], key=lambda ti: (ti.task_id, ti.map_index))

    def get_task_instance(
        self, dag_id: str, run_id: str, task_id: str, map_index: int = -1
    ) -> TaskInstance:
        for ti in self.task_instances(dag_id, run_id):
            if ti.task_id == task_id and ti.map_index == map_index:
                return ti
        raise NotFound(f"task {task_id}[{map_index}] of run {run_id!r} not found")

    def task_log(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        map_index: int = -1,
        try_number: int | None = None,
    ) -> str:
        self.get_task_instance(dag_id, run_id, task_id, map_index)
        return self.logs.get((run_id, task_id, map_index), "")

    def cancel(self, dag_id: str, run_id: str) -> WorkflowRun:
        run = self.get_run(dag_id, run_id)
        if run.state.finished:
            raise Conflict(f"run {run_id!r} of workflow {dag_id!r} has already finished")
        self.tasks[run_id] = [
            ti
            if ti.state.finished
            else replace(
                ti,
                state=TaskState.FAILED if ti.state in _STOPPED_BY_CANCEL else TaskState.SKIPPED,
                ended_at=_now(),
            )
            for ti in self.tasks[run_id]
        ]
        self.set_run(run_id, RunState.CANCELLED)
        return self.runs[run_id]

    def set_task_state(
        self, dag_id: str, run_id: str, task_id: str, state: TaskState, map_index: int = -1
    ) -> TaskInstance:
        if state not in SETTABLE_TASK_STATES:
            allowed = ", ".join(sorted(SETTABLE_TASK_STATES))
            raise Invalid(f"a task instance can be set to {allowed}, not {state}")
        ti = self.get_task_instance(dag_id, run_id, task_id, map_index)
        updated = replace(ti, state=state)
        self.tasks[run_id] = [updated if t is ti else t for t in self.tasks[run_id]]
        return updated

    def put_run_token(self, run_id: str, token: str) -> None:
        self._check()
        self.run_tokens[run_id] = token

    def remove_run_token(self, run_id: str) -> None:
        self._check()
        self.run_tokens.pop(run_id, None)

    # -- test controls -----------------------------------------------------------------

    def set_run(self, run_id: str, state: RunState) -> None:
        """Move a run on as Airflow's scheduler would; a run that ends has started."""
        run = self.runs[run_id]
        started = run.started_at
        if started is None and state is not RunState.QUEUED:
            started = _now()
        ended = run.ended_at or (_now() if state.finished else None)
        self.runs[run_id] = replace(run, state=state, started_at=started, ended_at=ended)

    def add_task(self, run_id: str, task_id: str, state: TaskState, map_index: int = -1,
                 label: str | None = None, log: str = "") -> None:  # fmt: skip
        self.tasks[run_id].append(
            TaskInstance(
                task_id=task_id, state=state, map_index=map_index, label=label, try_number=1
            )
        )
        self.logs[(run_id, task_id, map_index)] = log


def _check_conf(params_schema: Mapping[str, Any], conf: Mapping[str, Any]) -> None:
    """Refuse conf the workflow's params reject, as Airflow does (other keys pass)."""
    properties: Mapping[str, Any] = params_schema.get("properties") or {}
    missing = [name for name in params_schema.get("required") or [] if name not in conf]
    if missing:
        raise Invalid(f"conf lacks the required params {', '.join(missing)}")
    for name, value in conf.items():
        schema = properties.get(name)
        if not isinstance(schema, Mapping):
            continue
        error = jsonschema.exceptions.best_match(
            jsonschema.Draft202012Validator(dict(schema)).iter_errors(value)
        )
        if error is not None:
            raise Invalid(f"invalid conf for param {name!r}: {error.message}")
