"""The site's audit log: who did what to which thing, when, and from where.

Every service records through :meth:`AuditLog.record`; admins read the log through
``/api/audit`` and export it as CSV. The table is append-only (see the migration); this
module offers no way to change or delete an entry.
"""

from __future__ import annotations

import builtins
import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Engine, Select, select
from sqlalchemy.orm import Session

from jip.base.schema import AuditEntry, as_utc, now_utc

MAX_PAGE = 1000
CSV_COLUMNS = ["id", "at", "username", "action", "target", "client_ip", "detail"]


class AuditAction(StrEnum):
    """Actions of BASE; other services record their own dotted names (``store.delete``)."""

    LOGIN = "login"
    LOGIN_FAILED = "login.failed"
    LOGIN_THROTTLED = "login.throttled"
    LOGOUT = "logout"
    TOKEN_REUSE = "token.reuse"  # a rotated refresh token or used code came back
    USER_CREATE = "user.create"
    USER_UPDATE = "user.update"
    USER_PASSWORD = "user.password"
    PASSWORD_CHANGE_FAILED = "user.password.failed"  # a wrong current password
    USER_REMOVE = "user.remove"
    PROJECT_CREATE = "project.create"
    PROJECT_UPDATE = "project.update"
    PROJECT_REMOVE = "project.remove"
    MEMBER_SET = "project.member.set"
    MEMBER_REMOVE = "project.member.remove"
    AUDIT_EXPORT = "audit.export"


@dataclass(frozen=True)
class AuditRecord:
    id: int
    at: datetime
    username: str
    action: str
    target: str
    detail: dict[str, Any]
    client_ip: str


@dataclass(frozen=True)
class AuditFilter:
    username: str | None = None
    action: str | None = None  # exact, or a prefix ending in "." ("user." for all of them)
    since: datetime | None = None
    until: datetime | None = None


class AuditLog:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record(
        self,
        action: str,
        *,
        username: str,
        target: str = "",
        detail: dict[str, Any] | None = None,
        client_ip: str | None = None,
        at: datetime | None = None,
    ) -> None:
        """Append one entry; ``username`` is who acted (or tried to, for failed logins)."""
        with Session(self.engine) as session, session.begin():
            session.add(
                AuditEntry(
                    at=as_utc(at) if at is not None else now_utc(),
                    username=username[:64],
                    action=str(action)[:64],
                    target=target[:512],
                    detail=detail or {},
                    client_ip=(client_ip or "")[:64],
                )
            )

    def list(
        self, where: AuditFilter | None = None, *, limit: int = 100, before_id: int | None = None
    ) -> builtins.list[AuditRecord]:
        """Newest first; page with ``before_id`` = the smallest id of the previous page."""
        query = _filtered(where or AuditFilter()).order_by(AuditEntry.id.desc())
        if before_id is not None:
            query = query.where(AuditEntry.id < before_id)
        query = query.limit(max(1, min(limit, MAX_PAGE)))
        with Session(self.engine) as session:
            return [_record(entry) for entry in session.scalars(query)]

    def export_csv(self, where: AuditFilter | None = None) -> Iterator[str]:
        """The matching entries, oldest first, as CSV text chunks (header first)."""
        query = _filtered(where or AuditFilter()).order_by(AuditEntry.id)
        yield _csv_line(CSV_COLUMNS)
        with Session(self.engine) as session:
            for entry in session.scalars(query.execution_options(yield_per=MAX_PAGE)):
                record = _record(entry)
                yield _csv_line(
                    [
                        str(record.id),
                        record.at.isoformat(),
                        record.username,
                        record.action,
                        record.target,
                        record.client_ip,
                        _json(record.detail),
                    ]
                )

    def times(
        self, action: str, *, username: str, client_ip: str, since: datetime
    ) -> builtins.list[datetime]:
        """When ``action`` happened for this username and client IP since ``since``."""
        query = (
            select(AuditEntry.at)
            .where(
                AuditEntry.action == action,
                AuditEntry.username == username[:64],
                AuditEntry.client_ip == client_ip[:64],
                AuditEntry.at >= as_utc(since),
            )
            .order_by(AuditEntry.at)
        )
        with Session(self.engine) as session:
            return [as_utc(at) for at in session.scalars(query)]


def _filtered(where: AuditFilter) -> Select[tuple[AuditEntry]]:
    query = select(AuditEntry)
    if where.username:
        query = query.where(AuditEntry.username == where.username)
    if where.action:
        if where.action.endswith("."):
            query = query.where(AuditEntry.action.startswith(where.action, autoescape=True))
        else:
            query = query.where(AuditEntry.action == where.action)
    if where.since is not None:
        query = query.where(AuditEntry.at >= as_utc(where.since))
    if where.until is not None:
        query = query.where(AuditEntry.at < as_utc(where.until))
    return query


def _record(entry: AuditEntry) -> AuditRecord:
    return AuditRecord(
        id=entry.id,
        at=as_utc(entry.at),
        username=entry.username,
        action=entry.action,
        target=entry.target,
        detail=dict(entry.detail or {}),
        client_ip=entry.client_ip,
    )


def _json(value: dict[str, Any]) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _csv_line(cells: list[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerow([_defuse(cell) for cell in cells])
    return buffer.getvalue()


def _defuse(cell: str) -> str:
    """Keep spreadsheets from running cells as formulas (attempted usernames are input)."""
    if cell and cell[0] in "=+-@\t\r":
        return "'" + cell
    return cell
