"""An in-memory `WorkflowEngine` for tests of the flow service and routes (no Airflow)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from jip.errors import Conflict, Invalid, NotFound, Unavailable
from jip.flow.engine import RunState, TaskInstance, TaskState, WorkflowInfo, WorkflowRun


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


class FakeEngine:
    """Runs do nothing by themselves; tests set task instances and states."""

    def __init__(self, *workflows: WorkflowInfo) -> None:
        self.workflows = {w.dag_id: w for w in workflows}
        self.runs: dict[str, WorkflowRun] = {}
        self.tasks: dict[str, list[TaskInstance]] = {}
        self.logs: dict[tuple[str, str, int], str] = {}
        self.available = True
        self._counter = itertools.count(1)

    def _check(self) -> None:
        if not self.available:
            raise Unavailable("fake engine is down")

    def healthy(self) -> bool:
        return self.available

    def close(self) -> None:
        """Nothing to release: the fake holds no connections."""

    def health(self) -> Mapping[str, str]:
        return {"scheduler": "healthy" if self.available else "unhealthy"}

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
        self.get_workflow(dag_id)
        if not isinstance(conf.get("series", []), list):
            raise Invalid("series must be a list")
        run_id = run_id or f"manual__{next(self._counter)}"
        run = WorkflowRun(dag_id=dag_id, run_id=run_id, state=RunState.QUEUED, conf=dict(conf))
        self.runs[run_id] = run
        self.tasks[run_id] = []
        return run

    def get_run(self, dag_id: str, run_id: str) -> WorkflowRun:
        self._check()
        run = self.runs.get(run_id)
        if run is None or run.dag_id != dag_id:
            raise NotFound(f"run {run_id!r} not found")
        return run

    def list_runs(self, dag_id: str | None = None, limit: int = 50) -> list[WorkflowRun]:
        self._check()
        runs = [r for r in reversed(self.runs.values()) if dag_id in (None, r.dag_id)]
        return runs[:limit]

    def task_instances(self, dag_id: str, run_id: str) -> list[TaskInstance]:
        self.get_run(dag_id, run_id)
        return list(self.tasks[run_id])

    def get_task_instance(
        self, dag_id: str, run_id: str, task_id: str, map_index: int = -1
    ) -> TaskInstance:
        for ti in self.task_instances(dag_id, run_id):
            if ti.task_id == task_id and ti.map_index == map_index:
                return ti
        raise NotFound(f"task {task_id}[{map_index}] not found")

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
            raise Conflict(f"run {run_id!r} has already finished")
        self.runs[run_id] = replace(run, state=RunState.CANCELLED)
        return self.runs[run_id]

    def set_task_state(
        self, dag_id: str, run_id: str, task_id: str, state: TaskState, map_index: int = -1
    ) -> TaskInstance:
        ti = self.get_task_instance(dag_id, run_id, task_id, map_index)
        updated = replace(ti, state=state)
        self.tasks[run_id] = [updated if t is ti else t for t in self.tasks[run_id]]
        return updated

    # -- test controls -----------------------------------------------------------------

    def set_run(self, run_id: str, state: RunState) -> None:
        self.runs[run_id] = replace(self.runs[run_id], state=state)

    def add_task(self, run_id: str, task_id: str, state: TaskState, map_index: int = -1,
                 label: str | None = None, log: str = "") -> None:  # fmt: skip
        self.tasks[run_id].append(
            TaskInstance(task_id=task_id, state=state, map_index=map_index, label=label, try_number=1)
        )
        self.logs[(run_id, task_id, map_index)] = log
