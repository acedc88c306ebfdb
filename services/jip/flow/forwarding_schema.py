"""Forwarding tables: the rules ("series matching this query go to that peer") and the
queue of series to send, whose failed end is the dead-letter list.

One row per (rule, series), inserted when the series matched: it is the outbox the
forwarder sends from, the record of what was sent, and, once it failed
``forward.max_attempts`` times, a dead letter until an admin retries or drops it.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from jip.db import Base


class ItemState(StrEnum):
    PENDING = "pending"  # to send at next_attempt_at (first try or a retry after back-off)
    SENT = "sent"
    DEAD = "dead"  # failed max_attempts times: on the admin's dead-letter list
    DROPPED = "dropped"  # an admin gave up on it; kept so the rule never queues it again


class ForwardRule(Base):
    __tablename__ = "forward_rules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    query: Mapped[dict[str, object]] = mapped_column(JSON)
    peer: Mapped[str] = mapped_column(String(64))
    enabled: Mapped[bool] = mapped_column(Boolean)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Series that went quiet before this were looked at (None: none yet).
    checked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ForwardItem(Base):
    __tablename__ = "forward_items"
    __table_args__ = (
        UniqueConstraint("rule_id", "series_instance_uid", name="uq_forward_items_rule_series"),
        Index("ix_forward_items_state_due", "state", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    rule_id: Mapped[int] = mapped_column(ForeignKey("forward_rules.id", ondelete="CASCADE"))
    series_instance_uid: Mapped[str] = mapped_column(String(64))
    peer: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
