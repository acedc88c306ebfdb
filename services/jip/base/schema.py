"""Identity tables: users, projects, memberships, refresh tokens, codes and the audit log.

Secrets never reach the database in the clear: passwords are stored as scrypt hashes,
refresh tokens and authorization codes as SHA-256 digests of the random values handed
out. The audit log is append-only (the migration adds triggers refusing UPDATE and
DELETE) and keeps usernames as text, so it outlives the users it mentions.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from jip.db import Base

USERNAME = String(64)
DIGEST = String(64)  # hex SHA-256


class ProjectRole(StrEnum):
    """A member's role in a project, from most to least privileged."""

    OWNER = "owner"  # edits the project and its members
    RESEARCHER = "researcher"  # runs workflows, saves cohorts
    VIEWER = "viewer"  # reads

    @property
    def rank(self) -> int:
        return _RANK[self]

    def at_least(self, other: ProjectRole) -> bool:
        return self.rank >= other.rank


_RANK = {ProjectRole.VIEWER: 1, ProjectRole.RESEARCHER: 2, ProjectRole.OWNER: 3}


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(USERNAME, unique=True)
    # "scrypt$<n>$<r>$<p>$<salt>$<hash>", see jip.base.users.
    password_hash: Mapped[str] = mapped_column(String(256))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Carried in every access token (claim ``jip_ver``) and compared on every request:
    # bumped when the user is disabled, loses admin or a role, or changes password, it
    # ends their access tokens at once (jip.base.ledger).
    token_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Membership(Base):
    __tablename__ = "memberships"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    project_id: Mapped[int] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    role: Mapped[ProjectRole] = mapped_column(
        Enum(
            ProjectRole,
            native_enum=False,
            length=16,
            values_callable=lambda roles: [r.value for r in roles],
            validate_strings=True,
        )
    )


class RefreshToken(Base):
    """One refresh token; rotation revokes it and issues the next one of its family."""

    __tablename__ = "refresh_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    token_sha256: Mapped[str] = mapped_column(DIGEST, unique=True)
    # Every token descending from one login shares a family: presenting a revoked token
    # again (a stolen copy) revokes the whole family (OAuth 2.0 Security BCP §4.14).
    family: Mapped[str] = mapped_column(String(32), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    client_id: Mapped[str] = mapped_column(String(64))
    scope: Mapped[str] = mapped_column(String(256), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class AuthorizationCode(Base):
    """A single-use code of the browser login (RFC 6749 §4.1, PKCE per RFC 7636)."""

    __tablename__ = "authorization_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    code_sha256: Mapped[str] = mapped_column(DIGEST, unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    client_id: Mapped[str] = mapped_column(String(64))
    redirect_uri: Mapped[str] = mapped_column(String(2048))
    code_challenge: Mapped[str] = mapped_column(String(128))
    scope: Mapped[str] = mapped_column(String(256), default="")
    nonce: Mapped[str | None] = mapped_column(String(256), nullable=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # The refresh-token family issued for this code, revoked if the code comes back.
    family: Mapped[str | None] = mapped_column(String(32), nullable=True)


class IssuedToken(Base):
    """A token the site minted for its own machinery: a run's token, a service token.

    The token is valid only while its row is live (not revoked); a run's tokens are
    revoked when the run ends, a service token when the next one of its purpose is minted.
    """

    __tablename__ = "issued_tokens"

    jti: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # "run" or "service"
    # The run id, or the service token's purpose.
    subject: Mapped[str] = mapped_column(String(256), index=True)
    issued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class LoginAttempt(Base):
    """One password check, reserved before the hash is computed (jip.base.throttle)."""

    __tablename__ = "login_attempts"
    __table_args__ = (Index("ix_login_attempts_user", "username", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(USERNAME)
    client_ip: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    # "pending" (hashing), "failed", "ok", or "refused" (throttled, never hashed).
    outcome: Mapped[str] = mapped_column(String(16))


class AuditEntry(Base):
    __tablename__ = "audit_log"
    __table_args__ = (
        # Login throttling counts recent failures per username and client IP.
        Index("ix_audit_log_login", "action", "username", "client_ip", "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    username: Mapped[str] = mapped_column(USERNAME, index=True)
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(512), default="")
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    client_ip: Mapped[str] = mapped_column(String(64), default="")


def now_utc() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """``value`` in UTC; zone-less values (SQLite hands times back so) are taken as UTC.

    Every time is stored in UTC: SQLite keeps the wall-clock digits only, so a bound
    value in another zone would compare wrongly.
    """
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
