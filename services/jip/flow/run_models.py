"""Airflow's runs and task instances as the flow API's models, joined with JIP's records.

A run's state comes from the workflow engine; who started it, on what and why from the
flow tables (:mod:`jip.flow.records`); a run whose trigger failed exists only there.
"""

from __future__ import annotations

from collections.abc import Sequence

from jip.flow import records
from jip.flow.engine import RunState, TaskInstance, TaskState, WorkflowRun
from jip.flow.models import ResultModel, RunModel, SeriesProgress, TaskModel
from jip.flow.schema import ResultKind
from jip.flow.workflows import RESERVED_KEYS, SERIES_KEY

_SERIES_ORDER = (
    TaskState.FAILED,
    TaskState.UPSTREAM_FAILED,
    TaskState.RETRYING,
    TaskState.WAITING,
    TaskState.RUNNING,
    TaskState.QUEUED,
)


def short_task_id(task_id: str) -> str:
    """``series.organ-seg`` -> ``organ-seg`` (tasks inside the per-series group)."""
    return task_id.rsplit(".", 1)[-1]


def result_model(record: records.ResultRecord) -> ResultModel:
    if record.kind is ResultKind.DICOM:
        url = f"/dicom-web/studies/{record.study_instance_uid}/series/{record.result_series_uid}"
    else:
        url = f"/api/flow/runs/{record.run_id}/results/{record.id}"
    return ResultModel(
        id=record.id or 0,
        run_id=record.run_id,
        series_instance_uid=record.series_instance_uid,
        operator=record.operator,
        kind=record.kind,
        key=record.key,
        name=record.name,
        size_bytes=record.size_bytes,
        result_series_uid=record.result_series_uid,
        study_instance_uid=record.study_instance_uid,
        modality=record.modality,
        created_at=record.created_at,
        url=url,
    )


def unstarted_run(record: records.RunRecord) -> WorkflowRun:
    """A recorded run Airflow never got: failed, saying why."""
    return WorkflowRun(
        dag_id=record.dag_id,
        run_id=record.run_id,
        state=RunState.FAILED,
        queued_at=record.created_at,
        note=f"the run could not be started: {record.start_error}",
    )


def run_model(run: WorkflowRun, record: records.RunRecord | None) -> RunModel:
    conf = dict(run.conf)
    return RunModel(
        run_id=run.run_id,
        dag_id=run.dag_id,
        state=run.state,
        series=record.series if record else list(conf.get(SERIES_KEY) or []),
        params=record.params
        if record
        else {k: v for k, v in conf.items() if k not in RESERVED_KEYS},
        cohort_id=record.cohort_id if record else None,
        rule_id=record.rule_id if record else None,
        created_by=record.created_by if record else None,
        queued_at=run.queued_at,
        started_at=run.started_at,
        ended_at=run.ended_at,
        note=run.note,
    )


def task_model(ti: TaskInstance, series: Sequence[str]) -> TaskModel:
    uid: str | None = None
    if ti.map_index >= 0:
        # Airflow renders the label (the series UID) when an instance ends; before that
        # the map index says which series of the run's list it works on.
        if ti.label and ti.label != str(ti.map_index):
            uid = ti.label
        elif ti.map_index < len(series):
            uid = series[ti.map_index]
    return TaskModel(
        task_id=ti.task_id,
        state=ti.state,
        map_index=ti.map_index,
        series_instance_uid=uid,
        try_number=ti.try_number,
        started_at=ti.started_at,
        ended_at=ti.ended_at,
    )


def per_series(tasks: Sequence[TaskModel], series: Sequence[str]) -> list[SeriesProgress]:
    by_series: dict[str, dict[str, TaskState]] = {uid: {} for uid in series}
    for t in tasks:
        if t.series_instance_uid is not None:
            by_series.setdefault(t.series_instance_uid, {})[short_task_id(t.task_id)] = t.state
    return [
        SeriesProgress(series_instance_uid=uid, state=_series_state(states), tasks=states)
        for uid, states in by_series.items()
    ]


def _series_state(states: dict[str, TaskState]) -> TaskState:
    if not states:
        return TaskState.PENDING
    values = set(states.values())
    if values <= {TaskState.SUCCESS, TaskState.SKIPPED}:
        return TaskState.SUCCESS
    for state in _SERIES_ORDER:
        if state in values:
            return state
    # Some tasks done, the next not yet scheduled: under way.
    return TaskState.RUNNING if TaskState.SUCCESS in values else TaskState.PENDING
