"""Reads and writes of the flow tables for runs, results and human review steps.

Plain functions over an engine: the service decides, this module only stores. Recording
a result is idempotent (a retried put-output task records the same keys again).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, case, func, literal, select, update
from sqlalchemy.orm import Session

from jip.db import insert_ignoring_duplicates
from jip.errors import NotFound
from jip.flow.schema import FlowResult, FlowReview, FlowRun, ResultKind


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, kw_only=True)
class RunRecord:
    run_id: str
    dag_id: str
    series: list[str]
    params: dict[str, Any]
    cohort_id: str | None
    rule_id: int | None
    created_by: str
    created_at: datetime
    start_error: str | None = None
    projects: list[str] | None = None
    closed_at: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class ResultRecord:
    id: int | None
    run_id: str
    series_instance_uid: str
    operator: str
    kind: ResultKind
    key: str
    name: str
    size_bytes: int
    result_series_uid: str | None = None
    study_instance_uid: str | None = None
    modality: str | None = None
    created_at: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class ReviewRecord:
    run_id: str
    series_instance_uid: str
    seg_series_uid: str | None
    done_by: str
    done_at: datetime


# -- runs ---------------------------------------------------------------------------------


def add_run(engine: Engine, record: RunRecord) -> None:
    with Session(engine) as session, session.begin():
        session.add(
            FlowRun(
                run_id=record.run_id,
                dag_id=record.dag_id,
                series=list(record.series),
                params=dict(record.params),
                cohort_id=record.cohort_id,
                rule_id=record.rule_id,
                created_by=record.created_by,
                created_at=record.created_at,
                start_error=record.start_error,
                projects=None if record.projects is None else sorted(record.projects),
            )
        )


def mark_start_failed(engine: Engine, run_id: str, error: str) -> None:
    """The run was recorded but Airflow never got it: it is failed, for this reason."""
    with engine.begin() as conn:
        conn.execute(update(FlowRun).where(FlowRun.run_id == run_id).values(start_error=error))


def mark_closed(engine: Engine, run_id: str) -> bool:
    """Note that the run's token is closed; False when it was closed already."""
    with engine.begin() as conn:
        result = conn.execute(
            update(FlowRun)
            .where(FlowRun.run_id == run_id, FlowRun.closed_at.is_(None))
            .values(closed_at=now())
        )
        return bool(getattr(result, "rowcount", 0))


def open_runs(engine: Engine, *, limit: int = 500) -> list[RunRecord]:
    """Started runs whose token JIP has not closed yet, oldest first."""
    query = (
        select(FlowRun)
        .where(FlowRun.closed_at.is_(None), FlowRun.start_error.is_(None))
        .order_by(FlowRun.created_at)
        .limit(limit)
    )
    with Session(engine) as session:
        return [_run(row) for row in session.scalars(query)]


def run_state_counts(engine: Engine) -> dict[str, int]:
    """Runs by what JIP knows without asking Airflow: ``running`` (token open), ``ended``
    (token closed once Airflow said so) and ``start_failed`` (never reached Airflow)."""
    state = case(
        (FlowRun.start_error.is_not(None), "start_failed"),
        (FlowRun.closed_at.is_not(None), "ended"),
        else_="running",
    )
    with engine.connect() as conn:
        rows = conn.execute(select(state, func.count()).group_by(state)).all()
    counts = dict.fromkeys(("running", "ended", "start_failed"), 0)
    counts.update({str(name): int(count) for name, count in rows})
    return counts


def find_run(engine: Engine, run_id: str) -> RunRecord | None:
    with Session(engine) as session:
        row = session.get(FlowRun, run_id)
        return _run(row) if row is not None else None


def find_runs(engine: Engine, run_ids: Iterable[str]) -> dict[str, RunRecord]:
    """The recorded runs among ``run_ids``, in one query."""
    ids = sorted(set(run_ids))
    if not ids:
        return {}
    with Session(engine) as session:
        rows = session.scalars(select(FlowRun).where(FlowRun.run_id.in_(ids)))
        return {row.run_id: _run(row) for row in rows}


def newest_runs(
    engine: Engine, *, dag_id: str | None, limit: int, visible_series: Any = None
) -> list[RunRecord]:
    """The newest recorded runs, in one query; with ``visible_series`` (a subquery of
    Series Instance UIDs), only the runs every series of which it holds."""
    query = select(FlowRun)
    if dag_id is not None:
        query = query.where(FlowRun.dag_id == dag_id)
    if visible_series is not None:
        elements = _series_elements(engine)
        hidden = (
            select(literal(1)).select_from(elements).where(elements.c.value.not_in(visible_series))
        )
        query = query.where(~hidden.exists())
    query = query.order_by(FlowRun.created_at.desc(), FlowRun.run_id.desc()).limit(limit)
    with Session(engine) as session:
        return [_run(row) for row in session.scalars(query)]


def _series_elements(engine: Engine) -> Any:
    """``flow_runs.series`` (a JSON array) as a table of one ``value`` column per UID."""
    if engine.dialect.name == "postgresql":
        return func.json_array_elements_text(FlowRun.series).table_valued("value")
    return func.json_each(FlowRun.series).table_valued("value")


def runs_of_rule(engine: Engine, rule_id: int) -> list[str]:
    with Session(engine) as session:
        return list(session.scalars(select(FlowRun.run_id).where(FlowRun.rule_id == rule_id)))


def _run(row: FlowRun) -> RunRecord:
    return RunRecord(
        run_id=row.run_id,
        dag_id=row.dag_id,
        series=list(row.series),
        params=dict(row.params),
        cohort_id=row.cohort_id,
        rule_id=row.rule_id,
        created_by=row.created_by,
        created_at=row.created_at,
        start_error=row.start_error,
        projects=None if row.projects is None else list(row.projects),
        closed_at=row.closed_at,
    )


# -- results ------------------------------------------------------------------------------


def add_results(engine: Engine, records: Sequence[ResultRecord]) -> list[ResultRecord]:
    """Record results (an existing run/kind/key is kept); return them as stored."""
    if not records:
        return []
    stamp = now()
    rows = [
        {
            "run_id": r.run_id,
            "series_instance_uid": r.series_instance_uid,
            "operator": r.operator,
            "kind": r.kind,
            "key": r.key,
            "name": r.name,
            "size_bytes": r.size_bytes,
            "result_series_uid": r.result_series_uid,
            "study_instance_uid": r.study_instance_uid,
            "modality": r.modality,
            "created_at": stamp,
        }
        for r in records
    ]
    with engine.begin() as conn:
        conn.execute(insert_ignoring_duplicates(engine, FlowResult.__table__), rows)
    with Session(engine) as session:
        stored = []
        for r in records:
            row = session.scalars(
                select(FlowResult).where(
                    FlowResult.run_id == r.run_id,
                    FlowResult.kind == r.kind,
                    FlowResult.key == r.key,
                )
            ).one()
            stored.append(_result(row))
        return stored


def list_results(engine: Engine, run_id: str, *, series: str | None = None) -> list[ResultRecord]:
    query = select(FlowResult).where(FlowResult.run_id == run_id)
    if series is not None:
        query = query.where(FlowResult.series_instance_uid == series)
    with Session(engine) as session:
        return [_result(r) for r in session.scalars(query.order_by(FlowResult.id))]


def results_of_series(
    engine: Engine, series: str, *, kind: ResultKind | None = None, limit: int = 100
) -> list[ResultRecord]:
    """Results made from one source series by any run, newest first."""
    query = select(FlowResult).where(FlowResult.series_instance_uid == series)
    if kind is not None:
        query = query.where(FlowResult.kind == kind)
    with Session(engine) as session:
        rows = session.scalars(query.order_by(FlowResult.id.desc()).limit(limit))
        return [_result(r) for r in rows]


def get_result(engine: Engine, run_id: str, result_id: int) -> ResultRecord:
    with Session(engine) as session:
        row = session.get(FlowResult, result_id)
        if row is None or row.run_id != run_id:
            raise NotFound(f"result {result_id} of run {run_id!r} not found")
        return _result(row)


def set_result_size(engine: Engine, result_id: int, size_bytes: int) -> None:
    """A replaced result file's new size (the record itself is kept, see add_results)."""
    with engine.begin() as conn:
        conn.execute(
            update(FlowResult).where(FlowResult.id == result_id).values(size_bytes=size_bytes)
        )


def runs_producing(engine: Engine, series_uids: Iterable[str]) -> dict[str, set[str]]:
    """For each given series that is a DICOM result of some run: those runs' ids."""
    uids = list(series_uids)
    found: dict[str, set[str]] = {}
    if not uids:
        return found
    query = select(FlowResult.result_series_uid, FlowResult.run_id).where(
        FlowResult.kind == ResultKind.DICOM, FlowResult.result_series_uid.in_(uids)
    )
    with Session(engine) as session:
        for series_uid, run_id in session.execute(query):
            found.setdefault(str(series_uid), set()).add(run_id)
    return found


def _result(row: FlowResult) -> ResultRecord:
    return ResultRecord(
        id=row.id,
        run_id=row.run_id,
        series_instance_uid=row.series_instance_uid,
        operator=row.operator,
        kind=ResultKind(row.kind),
        key=row.key,
        name=row.name,
        size_bytes=row.size_bytes,
        result_series_uid=row.result_series_uid,
        study_instance_uid=row.study_instance_uid,
        modality=row.modality,
        created_at=row.created_at,
    )


# -- human review steps ----------------------------------------------------------------------


def mark_reviewed(
    engine: Engine,
    run_id: str,
    series_uid: str,
    *,
    done_by: str,
    seg_series_uid: str | None = None,
) -> ReviewRecord:
    """Mark one series' review done; a later corrected SEG replaces an earlier one."""
    with Session(engine) as session, session.begin():
        row = session.get(FlowReview, (run_id, series_uid))
        if row is None:
            row = FlowReview(run_id=run_id, series_instance_uid=series_uid)
            session.add(row)
        if seg_series_uid is not None or row.seg_series_uid is None:
            row.seg_series_uid = seg_series_uid
        row.done_by = done_by
        row.done_at = now()
        session.flush()
        return _review(row)


def find_review(engine: Engine, run_id: str, series_uid: str) -> ReviewRecord | None:
    with Session(engine) as session:
        row = session.get(FlowReview, (run_id, series_uid))
        return _review(row) if row is not None else None


def _review(row: FlowReview) -> ReviewRecord:
    return ReviewRecord(
        run_id=row.run_id,
        series_instance_uid=row.series_instance_uid,
        seg_series_uid=row.seg_series_uid,
        done_by=row.done_by,
        done_at=row.done_at,
    )
