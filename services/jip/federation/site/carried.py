"""Jobs carried by hand (``fed_carried_jobs``), kept apart from the hub's jobs.

Both kinds live in the one job book (``fed_jobs``), under the same policy, approval and
audit. What differs is the way back: the hub agent reports states and posts results to
its hub, which knows nothing of a job that came in a bundle (it would answer 404 and
the agent would retry forever); a carried job's result leaves only as a signed result
bundle. :class:`HubJobs` and :class:`CarriedJobs` are the two views of the book an
agent settles.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from jip.base import now_utc
from jip.errors import Conflict
from jip.federation.protocol import JobSpec, SiteJobState
from jip.federation.site.jobs import JobBook, JobRecord
from jip.federation.site.schema import FedCarriedJob, FedJob


@dataclass(frozen=True)
class Carried:
    """Where a carried job came from: its signer and the bundle's bytes."""

    job_id: str
    signer: str
    bundle_size: int
    bundle_sha256: str
    imported_by: str
    imported_at: datetime


def carried_ids(engine: Engine) -> set[str]:
    with Session(engine) as session:
        return set(session.scalars(select(FedCarriedJob.job_id)))


def carried(engine: Engine, job_id: str) -> Carried | None:
    with Session(engine) as session:
        row = session.get(FedCarriedJob, job_id)
        if row is None:
            return None
        return Carried(
            row.job_id,
            row.signer,
            row.bundle_size,
            row.bundle_sha256,
            row.imported_by,
            row.imported_at,
        )


def add_carried(engine: Engine, job: JobSpec, *, signer: str, data: bytes, by: str) -> None:
    """Book ``job`` (queued, round 1) and where it came from, in one transaction;
    Conflict when the job id is in the book already (a replayed bundle, or a job the
    hub sent): a job is taken once."""
    now = now_utc()
    with Session(engine) as session, session.begin():
        taken = session.scalar(select(FedJob.id).where(FedJob.job_id == job.id))
        if taken is not None or session.get(FedCarriedJob, job.id) is not None:
            raise Conflict(
                f"job {job.id}: this site has it already (a bundle is imported once; "
                "`jip fed queue --all` shows where it stands)"
            )
        session.add(
            FedJob(
                job_id=job.id,
                round=1,
                spec=job.model_dump(mode="json"),
                state=SiteJobState.QUEUED.value,
                result_posted=False,
                received_at=now,
                updated_at=now,
            )
        )
        session.add(
            FedCarriedJob(
                job_id=job.id,
                signer=signer,
                bundle_size=len(data),
                bundle_sha256=hashlib.sha256(data).hexdigest(),
                imported_by=by[:64],
                imported_at=now,
            )
        )


class HubJobs(JobBook):
    """The job book without the jobs carried by hand: what the hub agent settles."""

    def all(self, states: Iterable[SiteJobState] | None = None) -> list[JobRecord]:
        hand = carried_ids(self.engine)
        return [r for r in super().all(states) if r.job_id not in hand]


class CarriedJobs(JobBook):
    """Only the jobs carried by hand: what :func:`.bundles.settle_carried` settles."""

    def all(self, states: Iterable[SiteJobState] | None = None) -> list[JobRecord]:
        hand = carried_ids(self.engine)
        return [r for r in super().all(states) if r.job_id in hand]
