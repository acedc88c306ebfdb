"""Federated jobs as the researcher sees them: submit, later rounds, status, results.

A job goes to every site enrolled when it is submitted. A later round goes only to the
sites it is sealed to (the researcher seals it to the sites that answered round 1; the
hub stores the sealed entries and cannot read them); a site left out of a round is not
asked, is never waited for, and does not count as delivered. It succeeds with ``min_sites``
(k) of them: a site *delivered* when the hub holds its result for every round asked so
far. Once the deadline has passed, every site that has not delivered (and did not
refuse or fail, which say why) is reported ``missed_deadline`` and named; the job is
finished either way and never waits for it.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from jip.errors import Conflict, Invalid, NotFound
from jip.federation.crypto import canonical_json
from jip.federation.hub.home import Hub
from jip.federation.hub.tables import (
    Delivery,
    HubJob,
    HubResult,
    HubRound,
    HubSite,
    RoundDelivery,
)
from jip.federation.protocol import JobSpec, RoundRequest, SiteJobState, SiteJobStatus, SiteResult

_SAID_WHY = {SiteJobState.REFUSED, SiteJobState.FAILED}


def job_of(session: Session, job_id: str, researcher_id: str | None = None) -> HubJob:
    """The job; NotFound when it does not exist or (for a researcher) is not theirs."""
    job = session.get(HubJob, job_id)
    if job is None or (researcher_id is not None and job.researcher_id != researcher_id):
        raise NotFound(f"job {job_id}: no such job of yours")
    return job


def _spec_bytes(spec: JobSpec | RoundRequest) -> str:
    return canonical_json(spec.model_dump(mode="json")).decode("utf-8")


def submit(hub: Hub, researcher_id: str, spec: JobSpec) -> str:
    """Store ``spec`` and queue it for every enrolled site. The same spec again is
    accepted (a retried submit); another spec under the same id is a Conflict."""
    now = hub.clock()
    body = _spec_bytes(spec)
    with hub.sessions.begin() as session:
        existing = session.get(HubJob, spec.id)
        if existing is not None:
            if existing.researcher_id == researcher_id and existing.spec_json == body:
                return existing.id
            raise Conflict(f"job {spec.id}: the id is taken by another job; use a new id")
        if spec.deadline <= now:
            raise Invalid(f"deadline: {spec.deadline.isoformat()} has passed")
        sites = session.scalars(
            select(HubSite.id).where(HubSite.enrolled_at.is_not(None)).order_by(HubSite.id)
        ).all()
        if len(sites) < spec.min_sites:
            raise Invalid(
                f"min_sites: {spec.min_sites} asked, {len(sites)} sites are enrolled "
                "(`jip hub site list`)"
            )
        session.add(
            HubJob(
                id=spec.id,
                researcher_id=researcher_id,
                spec_json=body,
                min_sites=spec.min_sites,
                deadline=spec.deadline,
                created_at=now,
            )
        )
        session.flush()
        session.add_all(Delivery(job_id=spec.id, site_id=site) for site in sites)
    return spec.id


def add_round(hub: Hub, researcher_id: str, job_id: str, request: RoundRequest) -> None:
    """Queue a later round for the sites it is sealed to. Rounds come in order (2, 3,
    ...); the same request again is accepted, another one for a round that exists is a
    Conflict; an entry for a site the job was not sent to is Invalid."""
    if request.job_id != job_id:
        raise Invalid(f"job_id: the round names job {request.job_id}, the path {job_id}")
    body = _spec_bytes(request)
    with hub.sessions.begin() as session:
        job = job_of(session, job_id, researcher_id)
        existing = session.get(HubRound, (job_id, request.round))
        if existing is not None:
            if existing.request_json == body:
                return
            raise Conflict(f"round {request.round} of job {job_id} exists with other outputs")
        if job.deadline <= hub.clock():
            raise Conflict(f"job {job_id}: the deadline {job.deadline.isoformat()} has passed")
        expected = _last_round(session, job_id) + 1
        if request.round != expected:
            raise Invalid(f"round: the next round of job {job_id} is {expected}")
        session.add(
            HubRound(job_id=job_id, round=request.round, request_json=body, created_at=hub.clock())
        )
        sites = set(session.scalars(select(Delivery.site_id).where(Delivery.job_id == job_id)))
        strangers = sorted(set(request.sealed) - sites)
        if strangers:
            raise Invalid(
                f"sealed: job {job_id} was not sent to site {strangers[0]}; seal the round "
                "to the job's sites only"
            )
        session.add_all(
            RoundDelivery(job_id=job_id, site_id=site, round=request.round)
            for site in sorted(request.sealed)
        )


def _last_round(session: Session, job_id: str) -> int:
    rounds = session.scalars(select(HubRound.round).where(HubRound.job_id == job_id)).all()
    return max(rounds, default=1)


def status(hub: Hub, researcher_id: str, job_id: str) -> dict[str, Any]:
    """The job, each site's state, who delivered, who missed the deadline, and whether k
    of n is reached."""
    now = hub.clock()
    with hub.sessions() as session:
        job = job_of(session, job_id, researcher_id)
        last = _last_round(session, job_id)
        deliveries = session.scalars(
            select(Delivery).where(Delivery.job_id == job_id).order_by(Delivery.site_id)
        ).all()
        answered = _rounds_by_site(session, HubResult, job_id)
        asked = _rounds_by_site(session, RoundDelivery, job_id)
    passed = job.deadline <= now
    wanted = set(range(1, last + 1))
    left_out = {d.site_id for d in deliveries if wanted - {1} - asked.get(d.site_id, set())}
    delivered = sorted(
        d.site_id
        for d in deliveries
        if d.site_id not in left_out and wanted <= answered.get(d.site_id, set())
    )
    sites: dict[str, SiteJobStatus] = {}
    for d in deliveries:
        state = SiteJobState(d.state) if d.state else SiteJobState.QUEUED
        reason = d.reason
        if d.state is None and d.acked_at is None:
            reason = "the site has not fetched the job yet"
        if passed and d.site_id not in delivered and state not in _SAID_WHY:
            state = SiteJobState.MISSED_DEADLINE
            missing = sorted(wanted - answered.get(d.site_id, set()))
            reason = (
                f"no result for round {', '.join(map(str, missing))} by the deadline "
                f"{job.deadline.isoformat()}"
            )
            if d.site_id in left_out and 1 in answered.get(d.site_id, set()):
                skipped = sorted(wanted - {1} - asked.get(d.site_id, set()))
                reason = (
                    f"not asked for round {', '.join(map(str, skipped))}: the researcher "
                    "sealed it to the sites that had answered round 1"
                )
        sites[d.site_id] = SiteJobStatus(
            job_id=job_id,
            site_id=d.site_id,
            state=state,
            reason=reason,
            updated_at=d.state_at or job.created_at,
        )
    settled = all(s in delivered or s in left_out or sites[s].state in _SAID_WHY for s in sites)
    return {
        "spec": json.loads(job.spec_json),
        "deadline": job.deadline.isoformat(),
        "deadline_passed": passed,
        "min_sites": job.min_sites,
        "rounds": last,
        "sites": {site: s.model_dump(mode="json") for site, s in sites.items()},
        "delivered": delivered,
        "missed_deadline": sorted(
            s for s, v in sites.items() if v.state == SiteJobState.MISSED_DEADLINE
        ),
        "k_reached": len(delivered) >= job.min_sites,
        "finished": passed or settled,
    }


def _rounds_by_site(
    session: Session, table: type[HubResult] | type[RoundDelivery], job_id: str
) -> dict[str, set[int]]:
    found: dict[str, set[int]] = {}
    for site, round_ in session.execute(
        select(table.site_id, table.round).where(table.job_id == job_id)
    ):
        found.setdefault(site, set()).add(round_)
    return found


def results(
    hub: Hub, researcher_id: str, job_id: str, round_: int | None = None
) -> list[SiteResult]:
    """The sealed results of the job (of one round when given), as the sites sent them."""
    with hub.sessions() as session:
        job_of(session, job_id, researcher_id)
        query = select(HubResult).where(HubResult.job_id == job_id)
        if round_ is not None:
            query = query.where(HubResult.round == round_)
        rows = session.scalars(query.order_by(HubResult.round, HubResult.site_id)).all()
    return [
        SiteResult(
            job_id=r.job_id,
            site_id=r.site_id,
            round=r.round,
            ciphertext=r.ciphertext,
            size=r.size,
            sha256=r.sha256,
        )
        for r in rows
    ]


def deadline_passed(job: HubJob, now: dt.datetime) -> bool:
    return job.deadline <= now
