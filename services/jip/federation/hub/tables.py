"""The hub's own database (SQLite in its data dir), apart from any site's catalog.

What it holds: the network's sites (public keys, the SHA-256 of the certificate issued
last), enrolment tokens and researcher tokens (SHA-256 only, never the token), jobs as
submitted, per-site delivery and state, later rounds, and results as ciphertext. What
it never holds: images, per-record values or anything it could decrypt.

The hub creates its tables itself (``HubBase.metadata.create_all``): it is a separate
application with a separate database, so the site catalog's migrations never see them.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import DateTime, TypeDecorator


class UtcDateTime(TypeDecorator[dt.datetime]):
    """An aware UTC datetime, stored naive in UTC (SQLite has no time zones)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(dt.UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        return None if value is None else value.replace(tzinfo=dt.UTC)


class HubBase(DeclarativeBase):
    """Declarative base of the hub's tables (not the site catalog's ``jip.db.Base``)."""


class HubSite(HubBase):
    __tablename__ = "hub_sites"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    enrolled_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    identity_key: Mapped[str | None] = mapped_column(String(44), nullable=True)  # Ed25519
    box_key: Mapped[str | None] = mapped_column(String(44), nullable=True)  # X25519
    cert_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    cert_not_after: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)


class EnrolmentToken(HubBase):
    __tablename__ = "hub_enrolment_tokens"

    token_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    site_id: Mapped[str] = mapped_column(ForeignKey("hub_sites.id"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    used_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)


class Researcher(HubBase):
    __tablename__ = "hub_researchers"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class HubJob(HubBase):
    __tablename__ = "hub_jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    researcher_id: Mapped[str] = mapped_column(ForeignKey("hub_researchers.id"), index=True)
    spec_json: Mapped[str] = mapped_column(Text)  # the JobSpec exactly as submitted
    min_sites: Mapped[int] = mapped_column(Integer)
    deadline: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class Delivery(HubBase):
    """One job at one site: whether the site acknowledged it, and its last state."""

    __tablename__ = "hub_deliveries"

    job_id: Mapped[str] = mapped_column(ForeignKey("hub_jobs.id"), primary_key=True)
    site_id: Mapped[str] = mapped_column(ForeignKey("hub_sites.id"), primary_key=True)
    acked_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    state: Mapped[str | None] = mapped_column(String(32), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    state_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)


class HubRound(HubBase):
    __tablename__ = "hub_rounds"

    job_id: Mapped[str] = mapped_column(ForeignKey("hub_jobs.id"), primary_key=True)
    round: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_json: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class RoundDelivery(HubBase):
    __tablename__ = "hub_round_deliveries"

    job_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    site_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    round: Mapped[int] = mapped_column(Integer, primary_key=True)
    acked_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)


class HubResult(HubBase):
    """A site's sealed result for one round: ciphertext only (sealed to the researcher)."""

    __tablename__ = "hub_results"
    __table_args__ = (UniqueConstraint("job_id", "site_id", "round"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("hub_jobs.id"), index=True)
    site_id: Mapped[str] = mapped_column(ForeignKey("hub_sites.id"))
    round: Mapped[int] = mapped_column(Integer)
    ciphertext: Mapped[str] = mapped_column(Text)  # base64, as the site sent it
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
