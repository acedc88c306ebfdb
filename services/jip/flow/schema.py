"""Flow tables: runs JIP started, their results, human review steps, auto-rules.

Airflow keeps the state of every run and task; these tables keep what Airflow does not
know: who started a run on which series and why (a cohort, a rule), which results a run
produced (DICOM series in the store, files in the result store), which human steps were
marked done, and which rules fired for which series (each at most once).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from jip.db import Base

UID = String(64)
RUN_ID = String(250)  # Airflow's dag_run_id limit


class ResultKind(StrEnum):
    """Where a result lives: a DICOM series in the store, or a file in the result store."""

    DICOM = "dicom"
    FILE = "file"


class FiringOutcome(StrEnum):
    STARTED = "started"
    FAILED = "failed"  # the workflow could not be started (message says why)


def _enum(kind: type[StrEnum], name: str) -> Enum:
    return Enum(
        kind,
        name=name,
        native_enum=False,
        length=16,
        create_constraint=False,
        values_callable=lambda members: [m.value for m in members],
    )


class FlowRun(Base):
    """A workflow run JIP started (runs started in Airflow's UI have no row)."""

    __tablename__ = "flow_runs"

    run_id: Mapped[str] = mapped_column(RUN_ID, primary_key=True)
    dag_id: Mapped[str] = mapped_column(String(250), index=True)
    series: Mapped[list[str]] = mapped_column(JSON)
    params: Mapped[dict[str, object]] = mapped_column(JSON)
    cohort_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    rule_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    # A run is recorded before Airflow is asked to start it: null while and once it is
    # triggered, else why the trigger failed (the run never reached Airflow).
    start_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The projects the run works for (its token's scope); null for runs recorded before
    # runs had projects (their series' projects stand in).
    projects: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    # When JIP saw the run end and revoked its token and its Airflow connection.
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class FlowResult(Base):
    """One result of one series of a run: a DICOM series or a file."""

    __tablename__ = "flow_results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(RUN_ID, index=True)
    # The series the task worked on (the source of the result).
    series_instance_uid: Mapped[str] = mapped_column(UID, index=True)
    operator: Mapped[str] = mapped_column(String(64))
    kind: Mapped[ResultKind] = mapped_column(_enum(ResultKind, "resultkind"))
    # DICOM: the result's SeriesInstanceUID; file: its key in the result store.
    key: Mapped[str] = mapped_column(String(512))
    name: Mapped[str] = mapped_column(String(256))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    # DICOM results: where the result series lies (study) and what it is (modality).
    result_series_uid: Mapped[str | None] = mapped_column(UID, nullable=True, index=True)
    study_instance_uid: Mapped[str | None] = mapped_column(UID, nullable=True)
    modality: Mapped[str | None] = mapped_column(String(16), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (UniqueConstraint("run_id", "kind", "key", name="uq_flow_results_key"),)


class FlowReview(Base):
    """A human step done for one series of a run, possibly with a corrected SEG."""

    __tablename__ = "flow_reviews"

    run_id: Mapped[str] = mapped_column(RUN_ID, primary_key=True)
    series_instance_uid: Mapped[str] = mapped_column(UID, primary_key=True)
    seg_series_uid: Mapped[str | None] = mapped_column(UID, nullable=True)
    done_by: Mapped[str] = mapped_column(String(64))
    done_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class FlowRule(Base):
    """When a complete series matches ``query`` (cohort language), start ``dag_id``."""

    __tablename__ = "flow_rules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    dag_id: Mapped[str] = mapped_column(String(250))
    query: Mapped[dict[str, object]] = mapped_column(JSON)
    params: Mapped[dict[str, object]] = mapped_column(JSON)
    enabled: Mapped[bool] = mapped_column(Boolean)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Series that went quiet up to this time have been checked against the rule.
    checked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class FlowRuleFiring(Base):
    """A rule fired for a series: at most once per (rule, series)."""

    __tablename__ = "flow_rule_firings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    rule_id: Mapped[int] = mapped_column(ForeignKey("flow_rules.id", ondelete="CASCADE"))
    series_instance_uid: Mapped[str] = mapped_column(UID)
    run_id: Mapped[str | None] = mapped_column(RUN_ID, nullable=True)
    outcome: Mapped[FiringOutcome] = mapped_column(_enum(FiringOutcome, "firingoutcome"))
    message: Mapped[str] = mapped_column(Text, default="")
    fired_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        UniqueConstraint("rule_id", "series_instance_uid", name="uq_flow_rule_firings"),
    )
