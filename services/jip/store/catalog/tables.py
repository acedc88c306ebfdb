"""Catalog tables: patient → study → series → instance, plus ingest conflicts.

The instance rows double as the outbox of the metadata indexer (``indexed_at`` is NULL
until META has indexed the instance), so a crash between store and index loses nothing.
String lengths follow the VR limits of PS3.5 §6.2 (UI 64, LO 64, PN 5×64, SH 16).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, DateTime, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from jip.db import Base

UID = String(64)


class Patient(Base):
    __tablename__ = "patients"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    patient_id: Mapped[str] = mapped_column(String(64), unique=True)
    patient_name: Mapped[str] = mapped_column(String(324), default="")
    patient_birth_date: Mapped[str] = mapped_column(String(8), default="")
    patient_sex: Mapped[str] = mapped_column(String(16), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Study(Base):
    __tablename__ = "studies"

    study_instance_uid: Mapped[str] = mapped_column(UID, primary_key=True)
    patient_pk: Mapped[int] = mapped_column(
        ForeignKey("patients.pk", ondelete="CASCADE"), index=True
    )
    study_date: Mapped[str] = mapped_column(String(8), default="", index=True)
    study_time: Mapped[str] = mapped_column(String(16), default="")
    accession_number: Mapped[str] = mapped_column(String(16), default="", index=True)
    study_id: Mapped[str] = mapped_column(String(16), default="")
    study_description: Mapped[str] = mapped_column(String(64), default="")
    referring_physician_name: Mapped[str] = mapped_column(String(324), default="")
    specific_character_set: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Series(Base):
    __tablename__ = "series"

    series_instance_uid: Mapped[str] = mapped_column(UID, primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(
        ForeignKey("studies.study_instance_uid", ondelete="CASCADE"), index=True
    )
    modality: Mapped[str] = mapped_column(String(16), default="", index=True)
    series_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    series_description: Mapped[str] = mapped_column(String(64), default="")
    body_part_examined: Mapped[str] = mapped_column(String(16), default="")
    performed_procedure_step_start_date: Mapped[str] = mapped_column(String(8), default="")
    performed_procedure_step_start_time: Mapped[str] = mapped_column(String(16), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Time of the last received instance: a series quiet for long enough is complete.
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class Instance(Base):
    __tablename__ = "instances"

    sop_instance_uid: Mapped[str] = mapped_column(UID, primary_key=True)
    series_instance_uid: Mapped[str] = mapped_column(
        ForeignKey("series.series_instance_uid", ondelete="CASCADE"), index=True
    )
    sop_class_uid: Mapped[str] = mapped_column(UID)
    transfer_syntax_uid: Mapped[str] = mapped_column(UID)
    instance_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    rows: Mapped[int | None] = mapped_column(Integer, nullable=True)
    columns: Mapped[int | None] = mapped_column(Integer, nullable=True)
    bits_allocated: Mapped[int | None] = mapped_column(Integer, nullable=True)
    number_of_frames: Mapped[int | None] = mapped_column(Integer, nullable=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    blob_key: Mapped[str] = mapped_column(String(512))
    calling_ae_title: Mapped[str] = mapped_column(String(16), default="")
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Outbox for META: NULL until indexed; index_error holds why a header failed.
    indexed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    index_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # DICOM JSON of the header (bulk data as "bulk:<tag>"), filled on first use.
    header_json: Mapped[str | None] = mapped_column(Text, nullable=True)

    __table_args__ = (Index("ix_instances_outbox", "indexed_at", "received_at"),)


class IngestConflict(Base):
    """A second instance with a known SOP Instance UID but different bytes."""

    __tablename__ = "ingest_conflicts"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sop_instance_uid: Mapped[str] = mapped_column(UID, index=True)
    stored_sha256: Mapped[str] = mapped_column(String(64))
    received_sha256: Mapped[str] = mapped_column(String(64))
    # Where the rejected bytes were kept for the admin to inspect (or the replaced
    # bytes, under the "overwrite" policy).
    quarantine_key: Mapped[str] = mapped_column(String(512))
    resolution: Mapped[str] = mapped_column(String(16))
    calling_ae_title: Mapped[str] = mapped_column(String(16), default="")
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SeriesProject(Base):
    """A series belongs to one or more projects; every query outside admin is limited
    to the series of the caller's projects. The rows go when the project is removed."""

    __tablename__ = "series_projects"

    series_instance_uid: Mapped[str] = mapped_column(
        ForeignKey("series.series_instance_uid", ondelete="CASCADE"), primary_key=True
    )
    project: Mapped[str] = mapped_column(
        String(64), ForeignKey("projects.name", ondelete="CASCADE"), primary_key=True, index=True
    )
    assigned_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # How it got there: "rule:<pk>", "default", "stow", "manual".
    assigned_by: Mapped[str] = mapped_column(String(64), default="")


class ProjectRule(Base):
    """Assigns a newly catalogued series to ``project`` when its calling AE title and/or
    one header field match (both, where both are given)."""

    __tablename__ = "project_rules"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project: Mapped[str] = mapped_column(
        String(64), ForeignKey("projects.name", ondelete="CASCADE"), index=True
    )
    calling_ae_title: Mapped[str] = mapped_column(String(16), default="")
    field: Mapped[str] = mapped_column(String(64), default="")  # a DICOM keyword
    pattern: Mapped[str] = mapped_column(String(128), default="")  # * and ? wildcards
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
