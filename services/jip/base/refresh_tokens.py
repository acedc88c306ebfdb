"""The embedded issuer's refresh tokens, kept in families: one family per login.

Every token descending from one login shares a family. Rotation claims the presented
token and issues the next one of its family; a claimed or revoked token presented again
(a stolen copy) revokes the whole family (OAuth 2.0 Security BCP §4.14) and is recorded
in the audit log. Logging out ends one family, or every family of a user.

Only digests are stored (``token_sha256``); the grants that decide when to issue,
rotate or revoke live in :mod:`jip.base.issuer`.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, Result, select, update
from sqlalchemy.orm import Session

from jip.base.audit import AuditAction, AuditLog
from jip.base.ledger import bump_token_version
from jip.base.schema import RefreshToken, User
from jip.base.tokens import TokenSet, TokenSigner
from jip.base.users import revoke_sessions, user_info
from jip.config import AuthSettings

log = logging.getLogger(__name__)


def digest(secret: str) -> str:
    """The hex SHA-256 a code or refresh token is stored and looked up by."""
    return hashlib.sha256(secret.encode()).hexdigest()


def rowcount(result: Result[Any]) -> int:
    return cast(CursorResult[Any], result).rowcount


class TokenFamilies:
    """Issues, claims and revokes the refresh tokens of one issuer's ``signer``."""

    def __init__(
        self, *, engine: Engine, settings: AuthSettings, signer: TokenSigner, audit: AuditLog
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.signer = signer
        self.audit = audit

    def issue(
        self,
        session: Session,
        user: User,
        *,
        client_id: str,
        scope: str,
        family: str,
        now: datetime,
        nonce: str | None = None,
    ) -> TokenSet:
        """The next refresh token of ``family`` and the access (and ID) token with it."""
        refresh = secrets.token_urlsafe(32)
        session.add(
            RefreshToken(
                token_sha256=digest(refresh),
                family=family,
                user_id=user.id,
                client_id=client_id,
                scope=scope,
                created_at=now,
                expires_at=now + timedelta(seconds=self.settings.refresh_token_ttl_s),
            )
        )
        info = user_info(session, user)
        id_token = None
        if "openid" in scope.split():
            id_token = self.signer.id_token(
                info, now=now, client_id=client_id, session_id=family, nonce=nonce
            )
        return TokenSet(
            access_token=self.signer.access_token(
                info, now=now, client_id=client_id, scope=scope, session_id=family
            ),
            expires_in=self.settings.access_token_ttl_s,
            refresh_token=refresh,
            refresh_expires_in=self.settings.refresh_token_ttl_s,
            scope=scope,
            id_token=id_token,
        )

    @staticmethod
    def find(session: Session, refresh_token: str) -> RefreshToken | None:
        return session.scalar(
            select(RefreshToken).where(RefreshToken.token_sha256 == digest(refresh_token))
        )

    def claim(self, session: Session, row: RefreshToken, *, now: datetime) -> bool:
        """Revoke ``row`` for its rotation; False if it was revoked already (a replay)."""
        return row.revoked_at is None and self._revoke(session, RefreshToken.id == row.id, now=now)

    def revoke_family(self, session: Session, family: str, *, now: datetime) -> None:
        self._revoke(session, RefreshToken.family == family, now=now)

    def end(self, refresh_token: str, *, client_ip: str, now: datetime) -> None:
        """Log out the session of ``refresh_token``; an unknown token is already ended."""
        with Session(self.engine) as session, session.begin():
            row = self.find(session, refresh_token)
            if row is None:
                return
            self.revoke_family(session, row.family, now=now)
            owner = session.get(User, row.user_id)
            username = owner.username if owner else ""
            token_client = row.client_id
        self.audit.record(
            AuditAction.LOGOUT,
            username=username,
            detail={"client_id": token_client, "sessions": "one"},
            client_ip=client_ip,
        )

    def end_all(self, username: str, *, client_ip: str) -> None:
        """Log ``username`` out everywhere: every family and access token of theirs ends."""
        with Session(self.engine) as session, session.begin():
            row_user = session.scalar(select(User).where(User.username == username))
            if row_user is not None:
                revoke_sessions(session, row_user.id)
                bump_token_version(session, row_user.id)
        self.audit.record(
            AuditAction.LOGOUT,
            username=username,
            detail={"sessions": "all"},
            client_ip=client_ip,
        )

    def record_reuse(self, user_id: int, family: str, *, kind: str, client_ip: str) -> None:
        """Tell the log and the admins that a used ``kind`` came back (family revoked)."""
        with Session(self.engine) as session:
            user = session.get(User, user_id)
            username = user.username if user else ""
        log.warning(
            "replayed %s: session revoked",
            kind,
            extra={"username": username, "session": family, "client_ip": client_ip},
        )
        self.audit.record(
            AuditAction.TOKEN_REUSE,
            username=username,
            target=family,
            detail={"kind": kind, "revoked": "session"},
            client_ip=client_ip,
        )

    @staticmethod
    def _revoke(session: Session, *where: Any, now: datetime) -> bool:
        result = session.execute(
            update(RefreshToken)
            .where(*where, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        return rowcount(result) > 0
