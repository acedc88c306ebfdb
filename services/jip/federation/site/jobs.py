"""The site's job book (``fed_jobs``) and its released-cohort ledger.

A job round is written here before the agent acknowledges it to the hub (a later round
opened from its sealed entry first), so a restart
finds every job it was given; its decision, its sealed result (before posting) and what
the hub has been told are kept with it, so a restart neither runs a job twice nor loses
what it owes the hub.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from jip.base import now_utc
from jip.errors import Conflict, NotFound
from jip.federation.disclosure import ReleasedCohort, hash_series
from jip.federation.protocol import (
    DeclaredOutput,
    JobSpec,
    RoundPlan,
    SiteJobState,
    SiteResult,
)
from jip.federation.site.schema import FedJob, FedReleasedCohort


@dataclass(frozen=True)
class JobRecord:
    """One persisted job round, as the agent and `jip fed queue` see it."""

    job_id: str
    round: int
    spec: dict[str, Any]
    state: SiteJobState
    reason: str | None
    result: SiteResult | None
    result_posted: bool
    reported_state: str | None
    decided_by: str | None

    @property
    def job(self) -> JobSpec:
        """Round 1's spec (later rounds keep their opened :class:`RoundPlan` in ``spec``,
        see :func:`round_document`)."""
        return JobSpec.model_validate(self.spec)

    @property
    def round_outputs(self) -> tuple[DeclaredOutput, ...]:
        """A later round's outputs, as this site opened them from its sealed entry (empty
        when the entry did not open: the round is refused, ``reason`` says why)."""
        if not self.spec.get("outputs"):
            return ()
        return RoundPlan.model_validate(self.spec).outputs


def round_document(
    job_id: str, round: int, outputs: tuple[DeclaredOutput, ...] | None
) -> dict[str, Any]:
    """What the book keeps of a later round: its outputs opened from the site's sealed
    entry (so a restart needs neither the hub nor the key again), or none when the entry
    did not open."""
    opened = [o.model_dump(mode="json") for o in outputs or ()]
    return {"job_id": job_id, "round": round, "outputs": opened}


def _record(row: FedJob) -> JobRecord:
    result = SiteResult.model_validate(row.result) if row.result is not None else None
    return JobRecord(
        row.job_id,
        row.round,
        dict(row.spec),
        SiteJobState(row.state),
        row.reason,
        result,
        row.result_posted,
        row.reported_state,
        row.decided_by,
    )


class JobBook:
    """``fed_jobs``: every round this site was given, and where it stands."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(self, job_id: str, round: int, spec: dict[str, Any]) -> bool:
        """Persist a delivered round (queued); False when it was persisted already (the
        hub sent it again because our ack was lost): it is not taken twice."""
        now = now_utc()
        row = FedJob(
            job_id=job_id,
            round=round,
            spec=spec,
            state=SiteJobState.QUEUED.value,
            result_posted=False,
            received_at=now,
            updated_at=now,
        )
        try:
            with Session(self.engine) as session, session.begin():
                session.add(row)
        except IntegrityError:
            return False
        return True

    def get(self, job_id: str, round: int = 1) -> JobRecord:
        with Session(self.engine) as session:
            row = self._row(session, job_id, round)
            return _record(row)

    @staticmethod
    def _row(session: Session, job_id: str, round: int) -> FedJob:
        row = session.scalar(select(FedJob).where(FedJob.job_id == job_id, FedJob.round == round))
        if row is None:
            raise NotFound(f"job {job_id} round {round}: not at this site")
        return row

    def all(self, states: Iterable[SiteJobState] | None = None) -> list[JobRecord]:
        query = select(FedJob).order_by(FedJob.id)
        if states is not None:
            query = query.where(FedJob.state.in_([s.value for s in states]))
        with Session(self.engine) as session:
            return [_record(row) for row in session.scalars(query)]

    def decide(
        self,
        job_id: str,
        round: int,
        state: SiteJobState,
        reason: str | None = None,
        *,
        by: str | None = None,
        expect: SiteJobState | None = None,
    ) -> JobRecord:
        """Move a round to ``state``; Conflict when ``expect`` is given and it is not there
        (an approver cannot approve a job the policy refused or that ran already)."""
        with Session(self.engine) as session, session.begin():
            row = self._row(session, job_id, round)
            if expect is not None and row.state != expect.value:
                raise Conflict(f"job {job_id}: is {row.state}, not {expect.value}")
            row.state, row.reason, row.updated_at = state.value, reason, now_utc()
            if by is not None:
                row.decided_by = by[:64]
            return _record(row)

    def store_result(
        self, job_id: str, round: int, result: SiteResult, cohort: ReleasedCohort | None
    ) -> None:
        """Keep the sealed result (before it is posted) and, in the same transaction,
        the released cohort in the ledger: both happen, or neither."""
        with Session(self.engine) as session, session.begin():
            row = self._row(session, job_id, round)
            row.result = result.model_dump(mode="json")
            row.state, row.reason, row.updated_at = SiteJobState.DONE.value, None, now_utc()
            if cohort is not None:
                session.add(
                    FedReleasedCohort(
                        job_id=cohort.job_id, series=sorted(cohort.series), released_at=now_utc()
                    )
                )

    def mark_posted(self, job_id: str, round: int) -> None:
        with Session(self.engine) as session, session.begin():
            self._row(session, job_id, round).result_posted = True

    def mark_reported(self, job_id: str, round: int, state: SiteJobState) -> None:
        with Session(self.engine) as session, session.begin():
            self._row(session, job_id, round).reported_state = state.value


class SqlCohortLedger:
    """The differencing guard's :class:`~jip.federation.CohortLedger` in
    ``fed_released_cohorts`` (recorded through :meth:`JobBook.store_result`)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def released(self) -> list[ReleasedCohort]:
        with Session(self.engine) as session:
            rows = session.scalars(select(FedReleasedCohort).order_by(FedReleasedCohort.id))
            return [ReleasedCohort(r.job_id, frozenset(r.series)) for r in rows]

    def record(self, cohort: ReleasedCohort) -> None:
        with Session(self.engine) as session, session.begin():
            session.add(
                FedReleasedCohort(
                    job_id=cohort.job_id, series=sorted(cohort.series), released_at=now_utc()
                )
            )


def released_cohort(job_id: str, series: Iterable[str], secret: bytes) -> ReleasedCohort:
    return ReleasedCohort(job_id, hash_series(series, secret))


def queue_view(record: JobRecord) -> dict[str, Any]:
    """What an approver sees for a queued job: who asks, on which cohort, and exactly the
    keys each declared output would send (nothing else can leave)."""
    from jip.federation.outputs import schema_for

    job = record.job
    return {
        "job_id": record.job_id,
        "state": record.state.value,
        "reason": record.reason,
        "project": job.project,
        "workflow": {
            "name": job.workflow.name,
            "image_digest": job.workflow.image_digest,
            "signer": job.workflow.signer_id,
        },
        "cohort": {"name": job.cohort.name, "query": job.cohort.query},
        "parameters": job.parameters,
        "deadline": job.deadline.isoformat(),
        "outputs": [
            {
                "name": o.name,
                "kind": o.kind.value,
                "field": o.field,
                "groups": list(o.group_labels),
                "edges": list(o.edges) if o.edges is not None else None,
                "leaves": {key: spec.role.value for key, spec in schema_for(o).fields.items()},
            }
            for o in job.outputs
        ],
    }
