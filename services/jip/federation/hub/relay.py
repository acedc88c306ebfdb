"""Federated jobs as a site sees them: what it has not acknowledged yet, its acks, its
state and its sealed results. A later round reaches only the sites it is sealed to, each
with its own sealed entry alone.

Delivery is at least once and stops at the ack: a job (or a later round) is sent on
every poll until the site says it has persisted it, then never again; a site that
restarts before acking simply gets it again. A state update or a result for a job
counts as its ack too (the site evidently has it). Results are idempotent per (job,
site, round): the same envelope again is fine, a different one is a Conflict, and after
the deadline nothing new is taken (the job's outcome is settled).
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from jip.errors import Conflict, Forbidden, Invalid, NotFound
from jip.federation.hub.home import Hub
from jip.federation.hub.jobs import deadline_passed, job_of
from jip.federation.hub.tables import Delivery, HubJob, HubResult, HubRound, RoundDelivery
from jip.federation.protocol import SiteJobStatus, SiteResult


def pending(hub: Hub, site_id: str) -> dict[str, list[dict[str, Any]]]:
    """The jobs and rounds ``site_id`` has not acknowledged, whose deadline is ahead
    (a round only once its job is acknowledged, so the site knows the job first)."""
    now = hub.clock()
    with hub.sessions() as session:
        jobs = session.scalars(
            select(HubJob)
            .join(Delivery, Delivery.job_id == HubJob.id)
            .where(Delivery.site_id == site_id, Delivery.acked_at.is_(None))
            .where(HubJob.deadline > now)
            .order_by(HubJob.created_at, HubJob.id)
        ).all()
        rounds = session.scalars(
            select(HubRound)
            .join(
                RoundDelivery,
                (RoundDelivery.job_id == HubRound.job_id) & (RoundDelivery.round == HubRound.round),
            )
            .join(Delivery, Delivery.job_id == HubRound.job_id)
            .join(HubJob, HubJob.id == HubRound.job_id)
            .where(RoundDelivery.site_id == site_id, RoundDelivery.acked_at.is_(None))
            .where(Delivery.site_id == site_id, Delivery.acked_at.is_not(None))
            .where(HubJob.deadline > now)
            .order_by(HubRound.created_at, HubRound.job_id, HubRound.round)
        ).all()
        return {
            "jobs": [json.loads(j.spec_json) for j in jobs],
            "rounds": [_own_entry(json.loads(r.request_json), site_id) for r in rounds],
        }


def _own_entry(request: dict[str, Any], site_id: str) -> dict[str, Any]:
    """A sealed round as one site gets it: its own entry only (the others are of no use
    to it, and each site learns nothing about who else was asked)."""
    return {**request, "sealed": {site_id: request["sealed"][site_id]}}


def _delivery(session: Session, site_id: str, job_id: str) -> Delivery:
    delivery = session.get(Delivery, (job_id, site_id))
    if delivery is None:
        raise NotFound(f"job {job_id}: not sent to site {site_id}")
    return delivery


def _ack(session: Session, hub: Hub, site_id: str, job_id: str, round_: int) -> None:
    now = hub.clock()
    delivery = _delivery(session, site_id, job_id)
    if delivery.acked_at is None:
        delivery.acked_at = now
    if round_ == 1:
        return
    done = session.execute(
        update(RoundDelivery)
        .where(
            RoundDelivery.job_id == job_id,
            RoundDelivery.site_id == site_id,
            RoundDelivery.round == round_,
            RoundDelivery.acked_at.is_(None),
        )
        .values(acked_at=now)
    )
    if done.rowcount == 0 and session.get(RoundDelivery, (job_id, site_id, round_)) is None:  # type: ignore[attr-defined]
        raise NotFound(f"job {job_id}: no round {round_} was sent to site {site_id}")


def ack(hub: Hub, site_id: str, job_id: str, round_: int = 1) -> None:
    """The site has persisted the job (round 1) or a later round: not sent again."""
    with hub.sessions.begin() as session:
        _ack(session, hub, site_id, job_id, round_)


def report_state(hub: Hub, site_id: str, job_id: str, state: SiteJobStatus) -> None:
    """Record the site's state for the job (an older update than the one kept is
    ignored, so a retried request cannot move a job back)."""
    if state.job_id != job_id or state.site_id != site_id:
        raise Forbidden(
            f"state: names job {state.job_id} at site {state.site_id}; "
            f"this is job {job_id} and the certificate's site {site_id}"
        )
    with hub.sessions.begin() as session:
        _ack(session, hub, site_id, job_id, 1)
        delivery = _delivery(session, site_id, job_id)
        if delivery.state_at is not None and state.updated_at < delivery.state_at:
            return
        delivery.state = state.state.value
        delivery.reason = state.reason
        delivery.state_at = state.updated_at


def store_result(hub: Hub, site_id: str, job_id: str, result: SiteResult) -> None:
    """Keep the site's sealed result once; Conflict for another body for the same round
    or for a new result after the deadline."""
    if result.job_id != job_id or result.site_id != site_id:
        raise Forbidden(
            f"result: names job {result.job_id} at site {result.site_id}; "
            f"this is job {job_id} and the certificate's site {site_id}"
        )
    now = hub.clock()
    try:
        with hub.sessions.begin() as session:
            job = job_of(session, job_id)
            _delivery(session, site_id, job_id)
            if _same_as_kept(session, result):
                return
            if deadline_passed(job, now):
                raise Conflict(
                    f"job {job_id}: the deadline {job.deadline.isoformat()} has passed; "
                    "the result is not taken"
                )
            if result.round > 1 and session.get(HubRound, (job_id, result.round)) is None:
                raise Invalid(f"round: job {job_id} has no round {result.round}")
            _ack(session, hub, site_id, job_id, result.round)
            session.add(
                HubResult(
                    job_id=job_id,
                    site_id=site_id,
                    round=result.round,
                    ciphertext=result.ciphertext,
                    size=result.size,
                    sha256=result.sha256,
                    received_at=now,
                )
            )
    except IntegrityError:  # the same round arrived twice at once: compare with the winner
        with hub.sessions() as session:
            if not _same_as_kept(session, result):
                raise _conflict(result) from None


def _same_as_kept(session: Session, result: SiteResult) -> bool:
    kept = session.scalar(
        select(HubResult).where(
            HubResult.job_id == result.job_id,
            HubResult.site_id == result.site_id,
            HubResult.round == result.round,
        )
    )
    if kept is None:
        return False
    if (kept.sha256, kept.size, kept.ciphertext) != (result.sha256, result.size, result.ciphertext):
        raise _conflict(result)
    return True


def _conflict(result: SiteResult) -> Conflict:
    return Conflict(
        f"result: site {result.site_id} already sent another result for round "
        f"{result.round} of job {result.job_id}"
    )
