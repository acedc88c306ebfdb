"""The tables of the PACS page: retrievals (one per retrieve, by hand or by a saved
query's run) and saved queries. Created by migration 0012_pacs_retrievals."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from jip.db import Base


class RetrievalState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"  # every study asked for; sub-operations may still have failed
    FAILED = "failed"  # stopped by an error (peer unreachable, refused)
    INTERRUPTED = "interrupted"  # the process running it stopped

    @property
    def finished(self) -> bool:
        return self not in (RetrievalState.QUEUED, RetrievalState.RUNNING)


class Retrieval(Base):
    __tablename__ = "dicom_retrievals"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    saved_query_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    peer: Mapped[str] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(8))  # "move" or "get"
    project: Mapped[str] = mapped_column(String(64))
    requested_by: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    study_uids: Mapped[list[str]] = mapped_column(JSON, default=list)
    found: Mapped[int] = mapped_column(Integer, default=0)  # studies the query matched
    skipped: Mapped[int] = mapped_column(Integer, default=0)  # of those, already stored
    studies_done: Mapped[int] = mapped_column(Integer, default=0)
    # Sub-operations (PS3.4 C.4.2.1.4), summed over the studies.
    completed: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    warning: Mapped[int] = mapped_column(Integer, default=0)
    remaining: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    def as_dict(self) -> dict[str, Any]:
        return {column.name: getattr(self, column.name) for column in self.__table__.columns}


class SavedQuery(Base):
    __tablename__ = "dicom_saved_queries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    peer: Mapped[str] = mapped_column(String(64))
    query: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    project: Mapped[str] = mapped_column(String(64))
    run_at: Mapped[str] = mapped_column(String(5))  # "HH:MM", UTC, every day
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    next_run_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
