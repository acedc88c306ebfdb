"""META tables in the catalog: instance summaries, series deletions, saved cohorts.

- ``meta_instance_summaries``: what :func:`jip.meta.extract.instance_summary` read from
  each instance header, as JSON. A series document is rebuilt from all summaries of its
  series whenever an instance arrives, so the header of an instance is read once, not
  once per later instance of its series. They live in the catalog rather than in the
  index: the index is derived data (dropped and rebuilt at will, and OpenSearch has no
  transactions across documents), while the summaries must commit together with the
  outbox. A foreign key with ``ON DELETE CASCADE`` removes them in the same transaction
  as the store deletes the instance.
- ``meta_deleted_series``: tombstones written by a trigger on ``series`` (see the
  migration) in the store's own delete transaction, so a deletion reaches the index even
  if the process dies right after it: the indexer drains them like the outbox.
- ``meta_cohorts`` and ``meta_cohort_series``: saved cohorts of a project, and the series
  list of a frozen one, in order.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

import jip.base  # noqa: F401  (importing BASE registers the projects table cohorts refer to)
from jip.db import Base
from jip.store import Catalog as _Catalog  # noqa: F401  (the same for the instances table)

UID = String(64)
COHORT_ID = String(32)


class InstanceSummary(Base):
    __tablename__ = "meta_instance_summaries"

    sop_instance_uid: Mapped[str] = mapped_column(
        UID, ForeignKey("instances.sop_instance_uid", ondelete="CASCADE"), primary_key=True
    )
    series_instance_uid: Mapped[str] = mapped_column(UID, index=True)
    summary: Mapped[str] = mapped_column(Text)  # JSON object, see jip.meta.extract
    extracted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DeletedSeries(Base):
    """A series the store deleted and the index may still hold (written by a trigger)."""

    __tablename__ = "meta_deleted_series"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    series_instance_uid: Mapped[str] = mapped_column(UID)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Cohort(Base):
    __tablename__ = "meta_cohorts"
    __table_args__ = (UniqueConstraint("project", "name", name="uq_meta_cohorts_project_name"),)

    id: Mapped[str] = mapped_column(COHORT_ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    description: Mapped[str] = mapped_column(Text, default="")
    project: Mapped[str] = mapped_column(
        String(64), ForeignKey("projects.name", ondelete="CASCADE"), index=True
    )
    query: Mapped[dict[str, Any]] = mapped_column(JSON)
    # Set while the cohort is frozen: its series are then meta_cohort_series, not the query.
    frozen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # The site an imported cohort was exported from ("" when made here).
    source_site: Mapped[str] = mapped_column(String(512), default="")
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class CohortSeries(Base):
    __tablename__ = "meta_cohort_series"

    cohort_id: Mapped[str] = mapped_column(
        COHORT_ID, ForeignKey("meta_cohorts.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_instance_uid: Mapped[str] = mapped_column(UID)
