"""Login throttling: every password check reserves an attempt before it hashes.

Three limits, each over the last ``auth.login_failure_window_s``:

- ``auth.login_max_failures`` failures of one username from one address (a successful
  login there starts the count afresh);
- ``auth.login_max_failures_per_user`` failures of one username from any address
  (guessing one password from many addresses);
- ``auth.login_max_failures_site`` failures of the whole site (spraying one password
  over many usernames).

An attempt is a row of ``login_attempts``, inserted (committed) *before* the limits are
counted; the attempts still hashing count as failures. So of any number of parallel
tries at most the limit get as far as the password hash, in every process of the site:
the last of them to be inserted sees all the others. Refused attempts are answered 429
with Retry-After and recorded in the audit log; they do not count themselves.

Each hash (scrypt, 32 MiB) also takes one of ``auth.max_concurrent_password_hashes``
slots of this process; a check that finds none free within ``auth.password_hash_wait_s``
is answered 503 (:class:`LoginBusy`), never queued without bound.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Engine, delete, func, select, update
from sqlalchemy.orm import Session

from jip import metrics
from jip.base.audit import AuditAction, AuditLog
from jip.base.schema import LoginAttempt, as_utc
from jip.config import AuthSettings
from jip.errors import Forbidden, Unavailable

T = TypeVar("T")
PENDING, FAILED, OK, REFUSED = "pending", "failed", "ok", "refused"
COUNTED = (PENDING, FAILED)


class TooManyAttempts(Forbidden):
    """Too many failed logins for this username (from this address), or site-wide."""

    def __init__(self, retry_after_s: int, scope: str = "for this username") -> None:
        super().__init__(f"too many failed logins {scope}: try again in {retry_after_s} s")
        self.retry_after_s = retry_after_s


class LoginBusy(Unavailable):
    """Every password-hash slot stayed busy: the caller should retry shortly."""

    def __init__(self, retry_after_s: int = 1) -> None:
        super().__init__(f"too many logins at once: try again in {retry_after_s} s")
        self.retry_after_s = retry_after_s


class LoginThrottle:
    def __init__(self, engine: Engine, audit: AuditLog, settings: AuthSettings) -> None:
        self.engine = engine
        self.audit = audit
        self.settings = settings
        self.slots = threading.BoundedSemaphore(settings.max_concurrent_password_hashes)

    def attempt(self, username: str, client_ip: str, *, now: datetime, check: Callable[[], T]) -> T:
        """Run ``check`` (the password hash) if the limits allow; record its outcome.

        Raises TooManyAttempts or LoginBusy without running it; whatever ``check``
        raises counts as a failure.
        """
        attempt_id = self.reserve(username, client_ip, now=now)
        if not self.slots.acquire(timeout=self.settings.password_hash_wait_s):
            self._finish(attempt_id, REFUSED)
            raise LoginBusy()
        outcome = FAILED
        try:
            result = check()
            outcome = OK
            return result
        finally:
            self.slots.release()
            self._finish(attempt_id, outcome)
            if outcome == FAILED:
                metrics.LOGIN_FAILURES.inc()

    def reserve(self, username: str, client_ip: str, *, now: datetime) -> int:
        """Insert a pending attempt, then refuse it if it is over a limit."""
        window = timedelta(seconds=self.settings.login_failure_window_s)
        since = as_utc(now - window)
        username, client_ip = username[:64], client_ip[:64]
        with Session(self.engine) as session, session.begin():
            session.execute(delete(LoginAttempt).where(LoginAttempt.at < since))
            row = LoginAttempt(
                username=username, client_ip=client_ip, at=as_utc(now), outcome=PENDING
            )
            session.add(row)
            session.flush()
            attempt_id = row.id
        with Session(self.engine) as session:
            others = (LoginAttempt.id != attempt_id, LoginAttempt.at >= since)
            last_ok = session.scalar(
                select(func.max(LoginAttempt.id)).where(
                    LoginAttempt.username == username,
                    LoginAttempt.client_ip == client_ip,
                    LoginAttempt.outcome == OK,
                )
            )
            limits: list[tuple[str, int, tuple[Any, ...]]] = [
                (
                    "for this username from this address",
                    self.settings.login_max_failures,
                    (
                        LoginAttempt.username == username,
                        LoginAttempt.client_ip == client_ip,
                        LoginAttempt.id > (last_ok or 0),
                    ),
                ),
                (
                    "for this username",
                    self.settings.login_max_failures_per_user,
                    (LoginAttempt.username == username,),
                ),
                ("at this site", self.settings.login_max_failures_site, ()),
            ]
            for scope, limit, where in limits:
                times = session.scalars(
                    select(LoginAttempt.at)
                    .where(*others, *where, LoginAttempt.outcome.in_(COUNTED))
                    .order_by(LoginAttempt.at.desc())
                    .limit(limit)
                ).all()
                if len(times) < limit:
                    continue
                # Logins reopen when fewer than `limit` counted failures remain in the window.
                retry_after = math.ceil((as_utc(times[-1]) + window - as_utc(now)).total_seconds())
                self._finish(attempt_id, REFUSED)
                self.audit.record(
                    AuditAction.LOGIN_THROTTLED,
                    username=username,
                    client_ip=client_ip,
                    detail={"limit": scope},
                    at=now,
                )
                raise TooManyAttempts(max(1, retry_after), scope)
        return attempt_id

    def _finish(self, attempt_id: int, outcome: str) -> None:
        with Session(self.engine) as session, session.begin():
            session.execute(
                update(LoginAttempt).where(LoginAttempt.id == attempt_id).values(outcome=outcome)
            )
