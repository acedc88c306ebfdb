"""Login throttling: too many failed logins of one username from one client IP wait.

After ``auth.login_max_failures`` failures within ``auth.login_failure_window_s``,
logins are refused (the issuer answers 429 with Retry-After) until the oldest counted
failure leaves the window; a successful login starts the count afresh. Failures are
counted from the audit log, so every process of the site sees the same count and a
restart forgets nothing.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from jip.base.audit import AuditAction, AuditLog
from jip.config import AuthSettings
from jip.errors import Forbidden


class TooManyAttempts(Forbidden):
    """Too many failed logins for this username from this client IP."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"too many failed logins: try again in {retry_after_s} s")
        self.retry_after_s = retry_after_s


class LoginThrottle:
    def __init__(self, audit: AuditLog, settings: AuthSettings) -> None:
        self.audit = audit
        self.settings = settings

    def check(self, username: str, client_ip: str, *, now: datetime) -> None:
        """Raise TooManyAttempts (and record it) while this pair is throttled."""
        window = timedelta(seconds=self.settings.login_failure_window_s)
        limit = self.settings.login_max_failures
        since = now - window
        failures = self.audit.times(
            AuditAction.LOGIN_FAILED, username=username, client_ip=client_ip, since=since
        )
        successes = self.audit.times(
            AuditAction.LOGIN, username=username, client_ip=client_ip, since=since
        )
        if successes:
            failures = [at for at in failures if at > successes[-1]]
        if len(failures) < limit:
            return
        # Logins reopen when fewer than `limit` failures remain in the window.
        retry_after = math.ceil((failures[-limit] + window - now).total_seconds())
        self.audit.record(
            AuditAction.LOGIN_THROTTLED, username=username, client_ip=client_ip, at=now
        )
        raise TooManyAttempts(max(1, retry_after))
