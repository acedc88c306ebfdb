"""Saved queries: a study query of a peer, run every day at a set time, retrieving what
is new into a project; and the scheduler that runs them inside `jip up`.

A saved query is due when its ``next_run_at`` has passed; "run now" sets it to now. The
scheduler (:class:`SavedQueryScheduler`) looks every ``store.pacs.scheduler_interval_s``
and claims each due query with a conditional update (only one process wins, if several
run the scheduler), moves ``next_run_at`` to the next day's time, then runs it: C-FIND,
skip the studies this site already holds whole, retrieve the rest
(:mod:`.retrievals`). Every run is a retrieval row of the query, so the PACS page shows
when it ran, what it found, retrieved and what failed, also when the peer was down.
"""

from __future__ import annotations

import logging
import re
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field, field_validator
from sqlalchemy import Engine, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from jip import errors
from jip.base import AuditLog, as_utc, now_utc
from jip.store.adapters import StoreAdapters
from jip.store.dimse import peers, retrievals
from jip.store.dimse.pacs_tables import Retrieval, SavedQuery
from jip.store.dimse.study_query import StudyQuery, find_studies

log = logging.getLogger(__name__)
SCHEDULER = "scheduler"  # who the audit log names for a scheduled run
_TIME = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


class SavedQueryIn(BaseModel):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._-]*$")
    peer: str = Field(min_length=1, max_length=64)
    project: str = Field(min_length=1, max_length=64)
    query: StudyQuery = Field(default_factory=StudyQuery)
    run_at: str = Field(default="02:00", description="every day at HH:MM, UTC")
    enabled: bool = True

    @field_validator("run_at")
    @classmethod
    def _time(cls, value: str) -> str:
        if not _TIME.match(value.strip()):
            raise ValueError(f"run_at {value!r}: a time of day as HH:MM (UTC), e.g. 02:00")
        return value.strip()


def next_run(run_at: str, after: datetime) -> datetime:
    """The first ``run_at`` (HH:MM, UTC) strictly after ``after``."""
    hour, minute = (int(part) for part in run_at.split(":"))
    after = as_utc(after)  # SQLite hands times back without their zone
    at = after.astimezone(UTC).replace(hour=hour, minute=minute, second=0, microsecond=0)
    return at if at > after else at + timedelta(days=1)


def add(adapters: StoreAdapters, body: SavedQueryIn, *, user: str) -> SavedQuery:
    peers.get_peer(adapters.engine, adapters.settings.store.peers, body.peer)  # 404 if unknown
    now = now_utc()
    row = SavedQuery(
        name=body.name,
        peer=body.peer,
        query=body.query.model_dump(),
        project=body.project,
        run_at=body.run_at,
        enabled=body.enabled,
        next_run_at=next_run(body.run_at, now),
        created_by=user[:64],
        created_at=now,
    )
    try:
        with Session(adapters.engine, expire_on_commit=False) as session, session.begin():
            session.add(row)
    except IntegrityError:
        raise errors.Conflict(
            f"a saved query named {body.name!r} exists: choose another name or remove it"
        ) from None
    return row


def list_all(engine: Engine) -> list[SavedQuery]:
    with Session(engine, expire_on_commit=False) as session:
        return list(session.scalars(select(SavedQuery).order_by(SavedQuery.name)))


def get(engine: Engine, query_id: int) -> SavedQuery:
    with Session(engine, expire_on_commit=False) as session:
        row = session.get(SavedQuery, query_id)
    if row is None:
        raise errors.NotFound(f"no saved query {query_id}; `jip dicom saved-query list` lists them")
    return row


def remove(engine: Engine, query_id: int) -> SavedQuery:
    """Remove the query; its past runs stay in the list of retrievals."""
    with Session(engine, expire_on_commit=False) as session, session.begin():
        row = session.get(SavedQuery, query_id)
        if row is None:
            raise errors.NotFound(f"no saved query {query_id}")
        session.delete(row)
    return row


def run_soon(engine: Engine, query_id: int) -> SavedQuery:
    """Make the query due now: the scheduler runs it at its next look."""
    get(engine, query_id)
    with engine.begin() as conn:
        conn.execute(
            update(SavedQuery).where(SavedQuery.id == query_id).values(next_run_at=now_utc())
        )
    return get(engine, query_id)


def claim_due(engine: Engine, now: datetime) -> list[SavedQuery]:
    """The enabled queries due at ``now`` that this caller won; each moved to its next day."""
    now = as_utc(now)
    with Session(engine, expire_on_commit=False) as session:
        due = list(
            session.scalars(
                select(SavedQuery).where(
                    SavedQuery.enabled.is_(True), SavedQuery.next_run_at <= now
                )
            )
        )
    claimed = []
    for row in due:
        with engine.begin() as conn:
            won = conn.execute(
                update(SavedQuery)
                .where(SavedQuery.id == row.id, SavedQuery.next_run_at == row.next_run_at)
                .values(next_run_at=next_run(row.run_at, now))
            )
        if won.rowcount == 1:
            claimed.append(row)
    return claimed


def run(adapters: StoreAdapters, saved: SavedQuery) -> Retrieval:
    """One run: find, skip what is stored whole, retrieve the rest; its retrieval row."""
    query = StudyQuery.model_validate(saved.query)
    try:
        peer = peers.get_peer(adapters.engine, adapters.settings.store.peers, saved.peer)
        matches, _more = find_studies(adapters.settings, adapters.engine, peer, query)
    except errors.JipError as exc:
        return _failed_run(adapters, saved, str(exc))
    new = [m.study_instance_uid for m in matches if not m.stored]
    request = retrievals.RetrievalRequest(
        peer=saved.peer,
        project=saved.project,
        study_uids=new,
        requested_by=f"{SCHEDULER}:{saved.name}",
        saved_query_id=saved.id,
        found=len(matches),
        skipped=len(matches) - len(new),
    )
    row = retrievals.create(adapters, request)
    _audit_run(adapters, saved, {"retrieval": row.id, "found": len(matches), "new": len(new)})
    return retrievals.execute(adapters, row.id)


def _failed_run(adapters: StoreAdapters, saved: SavedQuery, why: str) -> Retrieval:
    """A run whose query failed (peer down, unknown): recorded, so the page shows it."""
    request = retrievals.RetrievalRequest(
        peer=saved.peer,
        project=saved.project,
        study_uids=[],
        requested_by=f"{SCHEDULER}:{saved.name}",
        saved_query_id=saved.id,
    )
    row = retrievals.record_failed(adapters.engine, request, why)
    _audit_run(adapters, saved, {"retrieval": row.id, "error": why[:500]})
    return row


def _audit_run(adapters: StoreAdapters, saved: SavedQuery, detail: dict[str, Any]) -> None:
    AuditLog(adapters.engine).record(
        "dicom.saved_query.run",
        username=SCHEDULER,
        target=saved.name,
        detail={"peer": saved.peer, "project": saved.project, **detail},
    )


class SavedQueryScheduler:
    """The `jip up` component that runs saved queries when they are due."""

    name = "pacs-scheduler"

    def __init__(self, adapters: StoreAdapters, *, interrupt_all: bool = False) -> None:
        self.adapters = adapters
        # At start, retrievals left unfinished are marked interrupted: the scheduled ones
        # are this component's; the others only where the API shares this process.
        self.interrupt_all = interrupt_all
        self.interval_s = adapters.settings.store.pacs.scheduler_interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.runs = 0

    def tick(self, now: datetime | None = None) -> list[Retrieval]:
        """Run every query due at ``now`` (tests call this with a chosen time)."""
        done = []
        for saved in claim_due(self.adapters.engine, now or now_utc()):
            log.info("saved query due", extra={"saved_query": saved.name, "peer": saved.peer})
            done.append(run(self.adapters, saved))
            self.runs += 1
        return done

    def start(self) -> None:
        interrupted = retrievals.interrupt_unfinished(
            self.adapters.engine, scheduled_only=not self.interrupt_all
        )
        if interrupted:
            log.warning("retrievals interrupted by the last stop", extra={"count": interrupted})
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.tick()
            except Exception:  # the next look tries again; `jip up` keeps serving
                log.exception("saved query scheduler failed")

    def not_ready(self) -> str | None:
        return None if self._thread is not None and self._thread.is_alive() else "not started"

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)

    def describe(self) -> dict[str, object]:
        return {"interval_s": self.interval_s, "runs": self.runs}
