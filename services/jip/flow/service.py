"""The flow service: start workflows on series, report runs, logs and results.

Routes and the rule evaluator call this; it talks to the workflow engine (Airflow)
through the `WorkflowEngine` port and keeps what Airflow does not know in the flow
tables (:mod:`jip.flow.records`). Human review steps live in :mod:`jip.flow.reviews`.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select

from jip.errors import Invalid, NotFound, Unavailable
from jip.flow import records
from jip.flow.engine import TaskInstance, TaskState, WorkflowEngine, WorkflowRun
from jip.flow.models import (
    ResultIn,
    ResultModel,
    RunDetail,
    RunModel,
    SeriesProgress,
    StartRun,
    TaskModel,
    WorkflowModel,
)
from jip.flow.schema import ResultKind
from jip.flow.workflows import SERIES_KEY, STUDIES_KEY, TOKEN_KEY, check_params, resolve_schema
from jip.store.catalog.tables import Series
from jip.store.projects import SeriesProjects, as_scope, series_in_scope

log = logging.getLogger(__name__)

# A saved cohort id -> its series UIDs (meta's saved cohorts, once they land).
CohortResolver = Callable[[str], list[str]]
_SERIES_ORDER = (
    TaskState.FAILED,
    TaskState.UPSTREAM_FAILED,
    TaskState.RETRYING,
    TaskState.WAITING,
    TaskState.RUNNING,
    TaskState.QUEUED,
)


def new_run_id() -> str:
    """``jip__<UTC time>_<random>``: safe as a folder name and a storage key segment."""
    return f"jip__{datetime.now(UTC):%Y%m%dT%H%M%S}_{secrets.token_hex(3)}"


class FlowService:
    """One site's workflows over its catalog database and workflow engine."""

    def __init__(
        self,
        *,
        db: Engine,
        engine: WorkflowEngine,
        operators_dir: Any,
        cohorts: CohortResolver | None = None,
        scope: Collection[str] | None = None,
    ) -> None:
        self.db = db
        self.engine = engine
        self.operators_dir = operators_dir
        self.cohorts = cohorts
        # The projects whose series the caller may see (None: all). A run belongs to
        # the projects of its series: outside them it does not exist for the caller.
        self.scope = scope

    # -- workflows -----------------------------------------------------------------------

    def workflows(self) -> list[WorkflowModel]:
        return [self._workflow_model(w) for w in self.engine.list_workflows()]

    def workflow(self, dag_id: str) -> WorkflowModel:
        return self._workflow_model(self.engine.get_workflow(dag_id))

    def _workflow_model(self, info: Any) -> WorkflowModel:
        return WorkflowModel(
            dag_id=info.dag_id,
            description=info.description,
            params_schema=resolve_schema(info.params_schema, self.operators_dir),
            tags=list(info.tags),
            paused=info.paused,
        )

    # -- starting ------------------------------------------------------------------------

    def start(
        self,
        dag_id: str,
        request: StartRun,
        *,
        user: str,
        token: str | None = None,
        rule_id: int | None = None,
    ) -> RunModel:
        """Check the request, start the run, record who started it on what."""
        series = self._series_of(request)
        studies = self._studies_of(series)
        workflow = self.workflow(dag_id)
        check_params(request.params, workflow.params_schema)
        conf: dict[str, Any] = {**request.params, SERIES_KEY: series, STUDIES_KEY: studies}
        if token:
            conf[TOKEN_KEY] = token
        run = self.engine.trigger(dag_id, conf, run_id=new_run_id())
        record = records.RunRecord(
            run_id=run.run_id,
            dag_id=dag_id,
            series=series,
            params=dict(request.params),
            cohort_id=request.cohort_id,
            rule_id=rule_id,
            created_by=user,
            created_at=records.now(),
        )
        records.add_run(self.db, record)
        log.info(
            "workflow run started",
            extra={"dag_id": dag_id, "run_id": run.run_id, "series": len(series), "user": user},
        )
        return _run_model(run, record)

    def _series_of(self, request: StartRun) -> list[str]:
        if request.cohort_id and request.series:
            raise Invalid("name either a cohort_id or series, not both")
        if request.cohort_id:
            if self.cohorts is None:
                raise Unavailable(
                    "saved cohorts cannot be resolved on this site yet; pass the series UIDs"
                )
            series = self.cohorts(request.cohort_id)
        else:
            series = list(request.series)
        series = list(dict.fromkeys(series))
        if not series:
            raise Invalid("a run needs at least one series (series or a non-empty cohort)")
        return series

    def _studies_of(self, series: Sequence[str]) -> dict[str, str]:
        """Each series' study, from the catalog; NotFound names the missing series."""
        found: dict[str, str] = {}
        query = select(Series.series_instance_uid, Series.study_instance_uid)
        visible = series_in_scope(as_scope(self.scope))
        if visible is not None:
            query = query.where(visible)
        with self.db.connect() as conn:
            for start in range(0, len(series), 500):
                chunk = list(series[start : start + 500])
                rows = conn.execute(query.where(Series.series_instance_uid.in_(chunk)))
                found.update({row[0]: row[1] for row in rows})
        missing = [uid for uid in series if uid not in found]
        if missing:
            raise NotFound(f"series not in the store: {', '.join(missing[:10])}")
        return found

    # -- runs ----------------------------------------------------------------------------

    def runs(self, dag_id: str | None = None, limit: int = 50) -> list[RunModel]:
        # Scoped callers pick theirs out of a longer list of the newest runs.
        wanted = limit if self.scope is None else max(limit, 500)
        found = [
            (run, records.find_run(self.db, run.run_id))
            for run in self.engine.list_runs(dag_id, limit=wanted)
        ]
        return [_run_model(run, record) for run, record in found if self._visible(record)][:limit]

    def locate(self, run_id: str) -> tuple[str, records.RunRecord | None]:
        """The workflow of a run: from the flow tables, else from Airflow's newest runs."""
        record = records.find_run(self.db, run_id)
        if record is not None:
            if not self._visible(record):
                raise NotFound(f"workflow run {run_id!r} not found")
            return record.dag_id, record
        if self.scope is None:
            for run in self.engine.list_runs(None, limit=500):
                if run.run_id == run_id:
                    return run.dag_id, None
        raise NotFound(f"workflow run {run_id!r} not found")

    def _visible(self, record: records.RunRecord | None) -> bool:
        """Whether the caller may see every series of the run (runs JIP did not start,
        such as those started in Airflow's UI, only site admins see)."""
        if self.scope is None:
            return True
        return record is not None and self._series_visible(record.series)

    def _series_visible(self, series: Sequence[str]) -> bool:
        if self.scope is None:
            return True
        allowed = set(self.scope)
        projects = SeriesProjects(self.db).projects_of(series)
        return all(projects[uid] & allowed for uid in series)

    def run(self, run_id: str) -> RunDetail:
        dag_id, record = self.locate(run_id)
        run = self.engine.get_run(dag_id, run_id)
        series = list(run.conf.get(SERIES_KEY) or (record.series if record else []))
        tasks = [_task_model(ti, series) for ti in self.engine.task_instances(dag_id, run_id)]
        base = _run_model(run, record)
        return RunDetail(
            **base.model_dump(),
            tasks=tasks,
            per_series=_per_series(tasks, series),
            tasks_total=len(tasks),
            tasks_finished=sum(t.state.finished for t in tasks),
        )

    def cancel(self, run_id: str) -> RunModel:
        dag_id, record = self.locate(run_id)
        return _run_model(self.engine.cancel(dag_id, run_id), record)

    def logs(self, run_id: str, *, task: str | None = None, series: str | None = None) -> str:
        """The log of every matching task instance, each under a header line."""
        detail = self.run(run_id)
        chosen = [
            t
            for t in detail.tasks
            if (task is None or short_task_id(t.task_id) == task or t.task_id == task)
            and (series is None or t.series_instance_uid == series)
        ]
        if not chosen:
            raise NotFound(
                f"no task {task or '*'} for series {series or '*'} in run {run_id!r} "
                f"(tasks: {', '.join(sorted({short_task_id(t.task_id) for t in detail.tasks}))})"
            )
        texts = []
        for t in chosen:
            header = f"=== {t.task_id}" + (
                f" [{t.series_instance_uid}]" if t.series_instance_uid else ""
            )
            body = self.engine.task_log(detail.dag_id, run_id, t.task_id, t.map_index)
            texts.append(f"{header} ({t.state}) ===\n{body}")
        return "\n".join(texts)

    # -- results -------------------------------------------------------------------------

    def record_results(self, run_id: str, results: Sequence[ResultIn]) -> list[ResultModel]:
        """Record results of a run (one JIP did not start, too) made from series the
        caller may see."""
        record = records.find_run(self.db, run_id)
        sources = [r.series_instance_uid for r in results]
        if (record is not None and not self._visible(record)) or not self._series_visible(sources):
            raise NotFound(f"workflow run {run_id!r} not found")
        stored = records.add_results(
            self.db,
            [records.ResultRecord(id=None, run_id=run_id, **r.model_dump()) for r in results],
        )
        return [result_model(r) for r in stored]

    def results(self, run_id: str, *, series: str | None = None) -> list[ResultModel]:
        self.locate(run_id)
        return [result_model(r) for r in records.list_results(self.db, run_id, series=series)]

    def series_results(self, series: str, *, kind: ResultKind | None = None) -> list[ResultModel]:
        """Results of every run on ``series``; a series outside the scope is not found."""
        if self.scope is not None:
            projects = SeriesProjects(self.db).projects_of([series])[series]
            if not projects & set(self.scope):
                raise NotFound(f"series {series} not found")
        return [result_model(r) for r in records.results_of_series(self.db, series, kind=kind)]

    def result(self, run_id: str, result_id: int) -> records.ResultRecord:
        """One result; made from a series the caller may not see, it is not found."""
        record = records.get_result(self.db, run_id, result_id)
        if not self._series_visible([record.series_instance_uid]):
            raise NotFound(f"result {result_id} of run {run_id!r} not found")
        return record


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


def _run_model(run: WorkflowRun, record: records.RunRecord | None) -> RunModel:
    conf = dict(run.conf)
    return RunModel(
        run_id=run.run_id,
        dag_id=run.dag_id,
        state=run.state,
        series=record.series if record else list(conf.get(SERIES_KEY) or []),
        params=record.params
        if record
        else {k: v for k, v in conf.items() if k not in (SERIES_KEY, STUDIES_KEY, TOKEN_KEY)},
        cohort_id=record.cohort_id if record else None,
        rule_id=record.rule_id if record else None,
        created_by=record.created_by if record else None,
        queued_at=run.queued_at,
        started_at=run.started_at,
        ended_at=run.ended_at,
        note=run.note,
    )


def _task_model(ti: TaskInstance, series: Sequence[str]) -> TaskModel:
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


def _per_series(tasks: Sequence[TaskModel], series: Sequence[str]) -> list[SeriesProgress]:
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
