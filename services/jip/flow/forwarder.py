"""The forwarder: queues complete series that match a forwarding rule, sends what is due,
and retries with back-off until a series becomes a dead letter.

The send itself is store's (C-STORE or STOW-RS, :func:`jip.store.forward_send`); the
composition hands it in as a :class:`SeriesSender`, so flow never reaches the network
code. One pass (:meth:`Forwarder.run_once`) first queues, then sends; `jip up` runs a pass
every ``forward.interval_s`` (:class:`ForwardComponent`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from jip.base import AuditLog
from jip.config import ForwardSettings
from jip.errors import JipError, Unavailable
from jip.flow import forwarding
from jip.flow.forwarding_schema import ForwardRule, ItemState
from jip.flow.rules import LOOKBACK
from jip.meta import SeriesMatcher
from jip.store import Catalog

log = logging.getLogger(__name__)
USER = "jip-forward"  # who the audit log names for what the forwarder sends


class SeriesSender(Protocol):
    """Sends one stored series to the named peer; raises (with a message) when it fails."""

    def __call__(self, peer: str, series_instance_uid: str) -> None: ...


def backoff(settings: ForwardSettings, attempts: int) -> timedelta:
    """The wait after ``attempts`` failures: doubling from ``backoff_base_s`` to the cap."""
    seconds = settings.backoff_base_s * 2 ** max(attempts - 1, 0)
    return timedelta(seconds=min(settings.backoff_cap_s, seconds))


class Forwarder:
    """One site's forwarder over its catalog database; call :meth:`run_once` often."""

    def __init__(
        self,
        *,
        db: Engine,
        matcher: SeriesMatcher,
        sender: SeriesSender,
        settings: ForwardSettings,
        quiet_period_s: float,
    ) -> None:
        self.db = db
        self.matcher = matcher
        self.sender = sender
        self.settings = settings
        self.quiet = timedelta(seconds=quiet_period_s)
        self.audit = AuditLog(db)

    def run_once(self, at: datetime | None = None) -> dict[str, int]:
        """Queue newly complete matching series, then send what is due; counts of both."""
        at = at or forwarding.now()
        queued = self.queue(at)
        sent, failed = self.deliver(max(at, forwarding.now()))  # what it just queued too
        return {"queued": queued, "sent": sent, "failed": failed}

    def queue(self, at: datetime) -> int:
        """Queue, for each enabled rule, the series that went quiet since it last looked."""
        horizon = at - self.quiet
        with Session(self.db) as session:
            rules = list(session.scalars(select(ForwardRule).where(ForwardRule.enabled.is_(True))))
            session.expunge_all()
        queued = 0
        for rule in rules:
            since = forwarding.aware(rule.checked_until or rule.created_at) - LOOKBACK
            candidates = Catalog(self.db).series_updated_between(since, horizon)
            try:
                matched = self.matcher.matching(rule.query, candidates) if candidates else set()
            except Unavailable as exc:  # the index is away: look at these again next time
                log.warning("forwarding postponed", extra={"rule": rule.name, "error": str(exc)})
                continue
            except JipError as exc:
                log.error("forwarding rule unusable", extra={"rule": rule.name, "error": str(exc)})
                continue
            queued += forwarding.enqueue(self.db, rule, [u for u in candidates if u in matched])
            with self.db.begin() as conn:
                conn.execute(
                    update(ForwardRule)
                    .where(ForwardRule.id == rule.id)
                    .values(checked_until=horizon)
                )
        return queued

    def deliver(self, at: datetime) -> tuple[int, int]:
        """Send every due item once; (sent, failed) counts."""
        sent = failed = 0
        for item in forwarding.due(self.db, at):
            detail: dict[str, object] = {
                "series": [item.series_instance_uid],
                "rule": item.rule,
                "attempt": item.attempts + 1,
            }
            try:
                self.sender(item.peer, item.series_instance_uid)
            except Exception as exc:  # any failure counts: the peer, the storage, a bug
                error = str(exc) or type(exc).__name__
                state = forwarding.mark_failed(
                    self.db,
                    item,
                    error,
                    max_attempts=self.settings.max_attempts,
                    backoff=backoff(self.settings, item.attempts + 1),
                )
                failed += 1
                detail |= {"error": error, "state": state.value}
                action = "dicom.forward.dead" if state is ItemState.DEAD else "dicom.forward.failed"
                log.warning(
                    "forwarding failed",
                    extra={"series_instance_uid": item.series_instance_uid, "error": error},
                )
            else:
                forwarding.mark_sent(self.db, item.id)
                sent += 1
                action = "dicom.forward"
            self.audit.record(action, username=USER, target=item.peer, detail=detail)
        return sent, failed


class ForwardComponent:
    """Runs forwarder passes every ``forward.interval_s`` in a thread of `jip up`."""

    name = "forwarder"

    def __init__(self, open_forwarder: Callable[[], tuple[Forwarder, Callable[[], None]]],
                 interval_s: float) -> None:  # fmt: skip
        self.open_forwarder = open_forwarder
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._close: Callable[[], None] | None = None
        self.last_pass: float | None = None
        self.last_error: str | None = None

    def start(self) -> None:
        forwarder, self._close = self.open_forwarder()
        self._thread = threading.Thread(
            target=self._loop, args=(forwarder,), name="jip-forwarder", daemon=True
        )
        self._thread.start()

    def _loop(self, forwarder: Forwarder) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                forwarder.run_once()
                self.last_error = None
            except Exception as exc:  # keep going: the next pass may succeed
                self.last_error = str(exc)
                log.exception("forwarding pass failed")
            self.last_pass = time.time()

    def not_ready(self) -> str | None:
        if self._thread is None or not self._thread.is_alive():
            return "the forwarder is not running"
        return None

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self._close is not None:
            with contextlib.suppress(Exception):
                self._close()
            self._close = None

    def describe(self) -> dict[str, object]:
        return {"interval_s": self.interval_s, "last_error": self.last_error}
