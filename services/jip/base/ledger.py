"""What makes a validly signed token stop working before it expires.

A signature and an expiry say a token was issued, not that what it stands for still
holds. Every request's token is checked here against the database, uncached, so a
revocation takes effect at the very next request:

- a user's access token carries the user's ``token_version`` (claim ``jip_ver``); the
  user must still exist, be enabled and have that version (bumped on disable, loss of
  admin or of a role, password change and "log out everywhere");
- a token the site minted for its own machinery (a run's token, claim ``jip_run``; a
  service token, claim ``jip_svc``) is valid while its ``issued_tokens`` row is live:
  a run's tokens are revoked when the run ends, a service token when the next one of
  its purpose is minted.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, delete, select, update
from sqlalchemy.orm import Session

from jip.base.schema import IssuedToken, User, as_utc, now_utc
from jip.errors import Unauthorized

VERSION_CLAIM = "jip_ver"
RUN_CLAIM = "jip_run"
SERVICE_CLAIM = "jip_svc"
RUN = "run"
SERVICE = "service"


def bump_token_version(session: Session, *user_ids: int) -> None:
    """End every access token of these users (they log in or refresh again)."""
    if user_ids:
        session.execute(
            update(User).where(User.id.in_(user_ids)).values(token_version=User.token_version + 1)
        )


class TokenLedger:
    """The per-request checks and the records of the site's own tokens, over one engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- checks ------------------------------------------------------------------------------
    def check_site_token(self, claims: Mapping[str, Any], *, local_users: bool) -> None:
        """Raise Unauthorized unless a token signed with the site's own key still holds.

        ``local_users``: the site's issuer logs people in (embedded shape); else the site
        key signs only run tokens.
        """
        jti = claims.get("jti")
        if RUN_CLAIM in claims:
            self._check_issued(RUN, str(claims[RUN_CLAIM]), jti, "the run's token was revoked")
        elif SERVICE_CLAIM in claims:
            self._check_issued(
                SERVICE, str(claims[SERVICE_CLAIM]), jti, "a newer service token replaced it"
            )
        elif local_users:
            self._check_user(claims)
        else:
            raise Unauthorized("invalid token: the site's key signs only run tokens here")

    def _check_user(self, claims: Mapping[str, Any]) -> None:
        username = claims.get("preferred_username") or claims.get("sub")
        version = claims.get(VERSION_CLAIM)
        if not isinstance(username, str) or not isinstance(version, int):
            raise Unauthorized("token names no user version: log in again")
        with Session(self.engine) as session:
            row = session.execute(
                select(User.token_version, User.disabled).where(User.username == username)
            ).one_or_none()
        if row is None or row.disabled:
            raise Unauthorized("the account no longer exists or is disabled")
        if row.token_version != version:
            raise Unauthorized("token revoked (account or roles changed): log in again")

    def _check_issued(self, kind: str, subject: str, jti: object, why: str) -> None:
        if not isinstance(jti, str):
            raise Unauthorized("invalid token: no jti")
        with Session(self.engine) as session:
            row = session.get(IssuedToken, jti)
            if row is None or row.kind != kind or row.subject != subject:
                raise Unauthorized("invalid token: not issued by this site")
            if row.revoked_at is not None:
                raise Unauthorized(f"token revoked: {why}")

    # -- records -----------------------------------------------------------------------------
    def record(
        self, kind: str, subject: str, jti: str, *, now: datetime, expires_at: datetime
    ) -> None:
        """Record a new token; a service token revokes the earlier ones of its purpose."""
        with Session(self.engine) as session, session.begin():
            if kind == SERVICE:
                self._revoke(session, kind, subject, now=now)
            # Forget rows long expired: their tokens fail on expiry anyway.
            session.execute(delete(IssuedToken).where(IssuedToken.expires_at < as_utc(now)))
            session.add(
                IssuedToken(
                    jti=jti,
                    kind=kind,
                    subject=subject[:256],
                    issued_at=as_utc(now),
                    expires_at=as_utc(expires_at),
                )
            )

    def revoke(self, kind: str, subject: str) -> int:
        """Revoke every live token of ``subject``; returns how many were live."""
        with Session(self.engine) as session, session.begin():
            return self._revoke(session, kind, subject, now=now_utc())

    @staticmethod
    def _revoke(session: Session, kind: str, subject: str, *, now: datetime) -> int:
        result = session.execute(
            update(IssuedToken)
            .where(
                IssuedToken.kind == kind,
                IssuedToken.subject == subject[:256],
                IssuedToken.revoked_at.is_(None),
            )
            .values(revoked_at=as_utc(now))
        )
        return int(getattr(result, "rowcount", 0) or 0)
