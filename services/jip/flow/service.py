"""The flow service: start workflows on series, report runs, logs and results.

Routes and the rule evaluator call this; it talks to the workflow engine (Airflow)
through the `WorkflowEngine` port and keeps what Airflow does not know in the flow
tables (:mod:`jip.flow.records`). Human review steps live in :mod:`jip.flow.reviews`.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from jip.base import CurrentUser
from jip.errors import Forbidden, Invalid, NotFound, Unavailable
from jip.flow import access, records
from jip.flow.engine import WorkflowEngine
from jip.flow.models import (
    ResultIn,
    ResultModel,
    RunDetail,
    RunModel,
    StartRun,
    WorkflowModel,
)
from jip.flow.result_keys import check_result_key, check_result_uid, under_run
from jip.flow.run_models import (
    per_series,
    result_model,
    run_model,
    short_task_id,
    task_model,
    unstarted_run,
)
from jip.flow.run_tokens import RunTokenPolicy
from jip.flow.schema import ResultKind
from jip.flow.workflows import (
    RUN_TOKEN_KEY,
    SERIES_KEY,
    STUDIES_KEY,
    check_params,
    operators_of,
    resolve_schema,
)
from jip.store import Catalog, SeriesProjects, visible_series

log = logging.getLogger(__name__)

# A saved cohort id -> its series UIDs (meta's saved cohorts, once they land).
CohortResolver = Callable[[str], list[str]]
# Conf key of a run that retries another's failed series: that run (jip.flow.retry).
RETRY_OF_KEY = "jip_retry_of"


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
        caller: CurrentUser | None = None,
        tokens: RunTokenPolicy | None = None,
    ) -> None:
        self.db = db
        self.engine = engine
        self.operators_dir = operators_dir
        self.cohorts = cohorts
        # The projects whose series the caller may see (None: all). A run belongs to
        # the projects of its series: outside them it does not exist for the caller.
        self.scope = scope
        # Who asks (None: JIP itself, e.g. the rule evaluator); what they may change is
        # :mod:`jip.flow.access`'s to say.
        self.caller = caller
        # Each run's own token (None: authentication is off, runs need none).
        self.tokens = tokens

    # -- workflows -----------------------------------------------------------------------

    def workflows(self) -> list[WorkflowModel]:
        return [self._workflow_model(w) for w in self.engine.list_workflows()]

    def workflow(self, dag_id: str) -> WorkflowModel:
        return self._workflow_model(self.engine.get_workflow(dag_id))

    def _check_operators_dir(self, workflow: WorkflowModel) -> None:
        """Refuse to start operator steps whose parameters cannot be checked."""
        if operators_of(workflow.params_schema) and not Path(self.operators_dir).is_dir():
            raise Unavailable(
                f"operators folder {self.operators_dir} not found, so the parameters of "
                f"workflow {workflow.dag_id!r} cannot be checked; set flow.operators_dir "
                "(JIP_FLOW__OPERATORS_DIR) to the folder of operators/<name>/params.schema.json"
            )

    def _workflow_model(self, info: Any) -> WorkflowModel:
        if operators_of(info.params_schema) and not Path(self.operators_dir).is_dir():
            log.warning(
                "operators folder not found: operator parameter schemas are not shown",
                extra={"operators_dir": str(self.operators_dir), "dag_id": info.dag_id},
            )
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
        rule_id: int | None = None,
        extra_conf: Mapping[str, Any] | None = None,
    ) -> RunModel:
        """Check the request, start the run, record who started it on what.

        ``extra_conf``: JIP's own keys for the engine (a retry's link to its first run)."""
        series = self._series_of(request)
        studies = self._studies_of(series)
        projects = access.run_projects(
            self.caller, series, SeriesProjects(self.db).projects_of(series)
        )
        workflow = self.workflow(dag_id)
        self._check_operators_dir(workflow)
        check_params(request.params, workflow.params_schema)
        conf: dict[str, Any] = {
            **request.params,
            **(extra_conf or {}),
            SERIES_KEY: series,
            STUDIES_KEY: studies,
        }
        # Recorded first: a run Airflow starts is always one JIP knows of. A trigger that
        # fails leaves the record failed, saying why.
        record = records.RunRecord(
            run_id=new_run_id(),
            dag_id=dag_id,
            series=series,
            params=dict(request.params),
            cohort_id=request.cohort_id,
            rule_id=rule_id,
            created_by=user,
            created_at=records.now(),
            projects=projects,
        )
        records.add_run(self.db, record)
        try:
            if self.tokens is not None:
                token = self.tokens.issuer.issue_run_token(
                    run_id=record.run_id,
                    projects=projects,
                    ttl_s=self.tokens.ttl_s(workflow.params_schema),
                    started_by=user,
                )
                self.engine.put_run_token(record.run_id, token)
                conf[RUN_TOKEN_KEY] = True
            run = self.engine.trigger(dag_id, conf, run_id=record.run_id)
        except Exception as exc:
            records.mark_start_failed(self.db, record.run_id, str(exc) or type(exc).__name__)
            self.close_run(record.run_id)
            raise
        log.info(
            "workflow run started",
            extra={"dag_id": dag_id, "run_id": run.run_id, "series": len(series), "user": user},
        )
        return run_model(run, record)

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
        found = Catalog(self.db).scoped(self.scope).studies_of(series)
        missing = [uid for uid in series if uid not in found]
        if missing:
            raise NotFound(f"series not in the store: {', '.join(missing[:10])}")
        return found

    # -- runs ----------------------------------------------------------------------------

    def runs(self, dag_id: str | None = None, limit: int = 50) -> list[RunModel]:
        """The newest runs the caller may see, in a constant number of queries."""
        if self.scope is None:  # every run Airflow knows, started by JIP or not
            runs = self.engine.list_runs(dag_id, limit=limit)
            found = records.find_runs(self.db, [run.run_id for run in runs])
            for run in runs:
                self._close_if_ended(run, found.get(run.run_id))
            return [run_model(run, found.get(run.run_id)) for run in runs]
        # Scoped callers see the runs JIP recorded on series of their projects only.
        recorded = records.newest_runs(
            self.db, dag_id=dag_id, limit=limit, visible_series=visible_series(self.scope)
        )
        return [model for model in map(self._with_state, recorded) if model is not None]

    def _with_state(self, record: records.RunRecord) -> RunModel | None:
        """The run as Airflow reports it now; None when Airflow forgot it."""
        if record.start_error is not None:
            return run_model(unstarted_run(record), record)
        try:
            run = self.engine.get_run(record.dag_id, record.run_id)
        except NotFound:
            return None
        self._close_if_ended(run, record)
        return run_model(run, record)

    # -- the run's own token ----------------------------------------------------------------

    def _close_if_ended(self, run: Any, record: records.RunRecord | None) -> None:
        if record is not None and record.closed_at is None and run.state.finished:
            self.close_run(record.run_id)

    def close_run(self, run_id: str) -> None:
        """Revoke the run's token and remove it from the engine (the run ended)."""
        if self.tokens is not None:
            self.tokens.issuer.revoke_run_token(run_id)
            try:
                self.engine.remove_run_token(run_id)
            except Unavailable as exc:  # the sweep tries again; the token is revoked
                log.warning("run token not removed", extra={"run_id": run_id, "error": str(exc)})
                return
        if records.mark_closed(self.db, run_id):
            log.info("run token closed", extra={"run_id": run_id})

    def close_ended_runs(self) -> int:
        """Close the token of every run that ended (or Airflow forgot); returns how many."""
        closed = 0
        for record in records.open_runs(self.db):
            try:
                ended = self.engine.get_run(record.dag_id, record.run_id).state.finished
            except NotFound:
                ended = True
            if ended:
                self.close_run(record.run_id)
                closed += 1
        return closed

    def locate(self, run_id: str) -> tuple[str, records.RunRecord | None]:
        """The workflow of a run: from the flow tables, else from Airflow's newest runs."""
        access.check_own_run(self.caller, run_id)
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
        if record is not None and record.start_error is not None:
            run, instances = unstarted_run(record), []
        else:
            run = self.engine.get_run(dag_id, run_id)
            instances = self.engine.task_instances(dag_id, run_id)
            self._close_if_ended(run, record)
        series = list(run.conf.get(SERIES_KEY) or (record.series if record else []))
        tasks = [task_model(ti, series) for ti in instances]
        base = run_model(run, record)
        return RunDetail(
            **base.model_dump(),
            tasks=tasks,
            per_series=per_series(tasks, series),
            tasks_total=len(tasks),
            tasks_finished=sum(t.state.finished for t in tasks),
            retry_of=run.conf.get(RETRY_OF_KEY),
        )

    def cancel(self, run_id: str) -> RunModel:
        dag_id, record = self.locate(run_id)
        self.require_writer(run_id, record)
        run = self.engine.cancel(dag_id, run_id)
        if record is not None:
            self.close_run(run_id)
        return run_model(run, record)

    def require_writer(self, run_id: str, record: records.RunRecord | None) -> None:
        """Forbidden unless the caller may change the run (:mod:`jip.flow.access`)."""
        if record is None:  # started in Airflow's UI: only site admins see it at all
            access.require_run_writer(self.caller, run_id, [])
            return
        projects = record.projects
        if projects is None:  # recorded before runs had projects: their series' projects
            found = SeriesProjects(self.db).projects_of(record.series)
            projects = sorted(set().union(*found.values()))
        access.require_run_writer(self.caller, run_id, projects)

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
        """Record results the run's own tasks delivered (with the run's token)."""
        access.require_run_token(self.caller, run_id)
        return self.add_results(run_id, results)

    def add_results(self, run_id: str, results: Sequence[ResultIn]) -> list[ResultModel]:
        """Record results of a run made from its own series (or, for a run JIP did not
        start, series the caller may see): files under the run's own key prefix only."""
        self.check_sources(run_id, [r.series_instance_uid for r in results])
        for result in results:
            if result.kind is ResultKind.FILE:
                check_result_key(run_id, result.key)
            else:
                check_result_uid(result.key, result.result_series_uid)
        stored = records.add_results(
            self.db,
            [records.ResultRecord(id=None, run_id=run_id, **r.model_dump()) for r in results],
        )
        return [result_model(r) for r in stored]

    def check_sources(self, run_id: str, sources: Sequence[str]) -> None:
        """Results are made from the run's own series, all of which the caller may see."""
        record = records.find_run(self.db, run_id)
        if (record is not None and not self._visible(record)) or not self._series_visible(sources):
            raise NotFound(f"workflow run {run_id!r} not found")
        foreign = sorted(set(sources) - set(record.series)) if record is not None else []
        if foreign:
            raise Invalid(f"series not in run {run_id!r}: {', '.join(foreign[:5])}")

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
        """One result of a run the caller may see; made from a series the caller may not
        see, it is not found. A file outside the run's own key prefix (recorded before
        keys were checked) is never served."""
        self.locate(run_id)
        record = records.get_result(self.db, run_id, result_id)
        if not self._series_visible([record.series_instance_uid]):
            raise NotFound(f"result {result_id} of run {run_id!r} not found")
        if record.kind is ResultKind.FILE and not under_run(run_id, record.key):
            raise Forbidden(f"result {result_id} of run {run_id!r} lies outside the run's folder")
        return record
