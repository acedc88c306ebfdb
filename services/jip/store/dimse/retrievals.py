"""Retrieving studies from a DICOM peer into a project, as a job whose progress is kept.

A retrieval is a row (``dicom_retrievals``) before anything is asked of the peer; the
work runs on a background thread of the API process (:func:`start`) or on the saved
query scheduler's thread, and writes its sub-operation counts (PS3.4 C.4.2.1.4:
remaining, completed, failed, warning) as the peer reports them, so the PACS page can
poll ``GET /api/dicom/retrievals/{id}``.

Each study is fetched on its own: C-MOVE to our AE (the peer C-STOREs into our listener,
which checks and stores every instance and acknowledges it only once durable) or, for a
peer configured with ``retrieve: get``, C-GET on our own association, stored through
the same C-STORE path. Either way the peer's AE title is the caller, so assignment rules
see the same thing; afterwards every series of the study is assigned to the chosen
project, and a series that this retrieval brought in new leaves the default project
it fell into for want of a rule (it was asked for in this project).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine, delete, select, update
from sqlalchemy.orm import Session

from jip import errors
from jip.base import AuditLog, now_utc
from jip.config import DicomPeer
from jip.store.adapters import StoreAdapters
from jip.store.catalog.projects import SeriesProjects, reindex_series
from jip.store.catalog.queries import QueryLevel
from jip.store.catalog.tables import Series, SeriesProject
from jip.store.dicom_header import check_uid
from jip.store.dimse import peers, scu, storage_service
from jip.store.dimse.access import Caller, StoreAccess
from jip.store.dimse.pacs_tables import Retrieval, RetrievalState

log = logging.getLogger(__name__)
_PROGRESS_EVERY_S = 0.5  # how often counts are written while a study arrives
MAX_STUDIES = 1000  # per retrieval; a larger selection is a saved query's job


@dataclass(frozen=True)
class RetrievalRequest:
    peer: str
    project: str
    study_uids: list[str]
    requested_by: str
    saved_query_id: int | None = None
    found: int = 0  # studies the query matched (saved queries: before skipping)
    skipped: int = 0


def create(adapters: StoreAdapters, request: RetrievalRequest) -> Retrieval:
    """Record a queued retrieval; the peer must exist and the studies be named once."""
    peer = _peer(adapters, request.peer)
    uids = list(dict.fromkeys(check_uid(uid, "StudyInstanceUID") for uid in request.study_uids))
    if len(uids) > MAX_STUDIES:
        raise errors.Invalid(
            f"{len(uids)} studies in one retrieval: at most {MAX_STUDIES}; narrow the query"
        )
    row = _new_row(request, uids, method=peer.retrieve)
    with Session(adapters.engine, expire_on_commit=False) as session, session.begin():
        session.add(row)
    return row


def record_failed(engine: Engine, request: RetrievalRequest, why: str) -> Retrieval:
    """A retrieval that failed before it began (its query found no peer or no answer)."""
    row = _new_row(request, [], method="")
    row.state, row.error, row.finished_at = RetrievalState.FAILED, why[:2000], now_utc()
    with Session(engine, expire_on_commit=False) as session, session.begin():
        session.add(row)
    return row


def _new_row(request: RetrievalRequest, uids: list[str], *, method: str) -> Retrieval:
    return Retrieval(
        id=uuid.uuid4().hex,
        saved_query_id=request.saved_query_id,
        peer=request.peer,
        method=method,
        project=request.project,
        requested_by=request.requested_by[:64],
        state=RetrievalState.QUEUED,
        study_uids=uids,
        found=request.found or len(uids),
        skipped=request.skipped,
        studies_done=0,
        completed=0,
        failed=0,
        warning=0,
        remaining=0,
        error="",
        created_at=now_utc(),
    )


def get(engine: Engine, retrieval_id: str) -> Retrieval:
    with Session(engine, expire_on_commit=False) as session:
        row = session.get(Retrieval, retrieval_id)
    if row is None:
        raise errors.NotFound(f"no retrieval {retrieval_id!r}")
    return row


def recent(
    engine: Engine, *, saved_query_id: int | None = None, limit: int = 50
) -> list[Retrieval]:
    """The newest retrievals first; those of one saved query when it is given."""
    query = select(Retrieval).order_by(Retrieval.created_at.desc()).limit(limit)
    if saved_query_id is not None:
        query = query.where(Retrieval.saved_query_id == saved_query_id)
    with Session(engine, expire_on_commit=False) as session:
        return list(session.scalars(query))


def interrupt_unfinished(engine: Engine, *, scheduled_only: bool) -> int:
    """Mark retrievals left queued or running by a stopped process (at `jip up`); only
    the saved queries' runs when ``scheduled_only``."""
    unfinished = (RetrievalState.QUEUED.value, RetrievalState.RUNNING.value)
    query = update(Retrieval).where(Retrieval.state.in_(unfinished))
    if scheduled_only:
        query = query.where(Retrieval.saved_query_id.is_not(None))
    with engine.begin() as conn:
        result = conn.execute(query.values(state=RetrievalState.INTERRUPTED, finished_at=now_utc()))
    return int(result.rowcount or 0)


def start(adapters: StoreAdapters, retrieval_id: str) -> threading.Thread:
    """Run :func:`execute` on a background thread (the PACS page polls the row)."""
    thread = threading.Thread(
        target=execute, args=(adapters, retrieval_id), name=f"retrieve-{retrieval_id[:8]}"
    )
    thread.daemon = True
    thread.start()
    return thread


def execute(adapters: StoreAdapters, retrieval_id: str) -> Retrieval:
    """Fetch every study of the retrieval, in order; the finished row."""
    row = get(adapters.engine, retrieval_id)
    progress = _Progress(adapters.engine, retrieval_id)
    progress.write(state=RetrievalState.RUNNING)
    try:
        peer = _peer(adapters, row.peer)
        for uid in row.study_uids:
            before = _series_of(adapters.engine, uid)
            result = _fetch(adapters, peer, row.method, uid, progress.study)
            progress.study_done(result)
            _assign(
                adapters.engine, uid, row.project, new=_series_of(adapters.engine, uid) - before
            )
    except Exception as exc:
        if not isinstance(exc, errors.JipError):
            log.exception("retrieval failed", extra={"retrieval": retrieval_id})
        progress.write(state=RetrievalState.FAILED, error=str(exc)[:2000], finished_at=now_utc())
    else:
        progress.write(state=RetrievalState.DONE, remaining=0, finished_at=now_utc())
    done = get(adapters.engine, retrieval_id)
    AuditLog(adapters.engine).record(
        "dicom.retrieve.finished",
        username=done.requested_by,
        target=done.peer,
        detail={
            "retrieval": done.id,
            "project": done.project,
            "state": done.state,
            "studies": len(done.study_uids),
            "completed": done.completed,
            "failed": done.failed,
            "saved_query": done.saved_query_id,
        },
    )
    return done


def _peer(adapters: StoreAdapters, name: str) -> DicomPeer:
    return peers.get_peer(adapters.engine, adapters.settings.store.peers, name)


def _fetch(
    adapters: StoreAdapters,
    peer: DicomPeer,
    method: str,
    study_uid: str,
    progress: Callable[[scu.MoveProgress], None],
) -> scu.MoveResult:
    settings = adapters.settings
    keys = {"StudyInstanceUID": study_uid}
    if method == "get":
        caller = Caller(peer.ae_title, (peer,))
        on_store = functools.partial(
            storage_service.on_c_store,
            ingestor=adapters.ingestor,
            access=StoreAccess(adapters.engine, unknown_ae_store=False),
            identify=lambda _title: caller,
        )
        return scu.get(settings, peer, QueryLevel.STUDY, keys, on_store, progress=progress)
    destination = settings.store.ae_title
    return scu.move(settings, peer, destination, QueryLevel.STUDY, keys, progress=progress)


def _series_of(engine: Engine, study_uid: str) -> set[str]:
    query = select(Series.series_instance_uid).where(Series.study_instance_uid == study_uid)
    with engine.connect() as conn:
        return set(conn.execute(query).scalars())


def _assign(engine: Engine, study_uid: str, project: str, *, new: set[str]) -> None:
    """Every series of the study into ``project``; new ones out of the default project."""
    projects = SeriesProjects(engine)
    for series_uid in sorted(_series_of(engine, study_uid)):
        projects.assign(series_uid, project, by="retrieve")
    if not new:
        return
    with engine.begin() as conn:
        conn.execute(
            delete(SeriesProject).where(
                SeriesProject.series_instance_uid.in_(sorted(new)),
                SeriesProject.assigned_by == "default",
                SeriesProject.project != project,
            )
        )
        for series_uid in sorted(new):
            reindex_series(conn, series_uid)


class _Progress:
    """The running totals of one retrieval, written to its row now and then."""

    def __init__(self, engine: Engine, retrieval_id: str) -> None:
        self.engine = engine
        self.id = retrieval_id
        self.totals = {"completed": 0, "failed": 0, "warning": 0, "studies_done": 0}
        self._written = 0.0

    def study(self, now: scu.MoveProgress) -> None:
        """A pending response of the current study (its counts so far)."""
        if time.monotonic() - self._written < _PROGRESS_EVERY_S:
            return
        self.write(
            completed=self.totals["completed"] + now.completed,
            failed=self.totals["failed"] + now.failed,
            warning=self.totals["warning"] + now.warning,
            remaining=now.remaining,
        )

    def study_done(self, result: scu.MoveResult) -> None:
        self.totals["completed"] += result.completed
        self.totals["failed"] += result.failed
        self.totals["warning"] += result.warning
        self.totals["studies_done"] += 1
        self.write(**self.totals, remaining=0)

    def write(self, **values: object) -> None:
        self._written = time.monotonic()
        with self.engine.begin() as conn:
            conn.execute(update(Retrieval).where(Retrieval.id == self.id).values(**values))
