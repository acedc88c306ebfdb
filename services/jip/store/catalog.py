"""The catalog: what is stored, where, and how it hangs together.

Writes come in batches (see :mod:`jip.store.group_commit`) so that one transaction, and
one fsync, covers all instances that arrived while the previous batch committed.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, bindparam, delete, func, insert, select, update
from sqlalchemy.engine import Connection

from jip.db import insert_ignoring_duplicates
from jip.errors import NotFound
from jip.store.catalog_schema import (
    IngestConflict,
    Instance,
    Patient,
    Series,
    SeriesProject,
    Study,
)
from jip.store.dicom_file import InstanceHeader
from jip.store.projects import Scope, as_scope, assign_new_series, series_in_scope


class AddOutcome(enum.StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"  # same SOP Instance UID, same bytes: nothing to do
    CONFLICT = "conflict"  # same UID, different bytes, the first kept
    OVERWRITTEN = "overwritten"  # same UID, different bytes, replaced by policy


class DuplicatePolicy(enum.StrEnum):
    KEEP_FIRST = "keep_first"
    OVERWRITE = "overwrite"


@dataclass(frozen=True)
class NewInstance:
    """A received instance whose bytes are already durable under ``blob_key``."""

    header: InstanceHeader
    size_bytes: int
    sha256: str
    blob_key: str
    calling_ae_title: str = ""
    # The project a new series goes to (STOW-RS ``?project=``); None: the rules decide.
    project: str | None = None


@dataclass(frozen=True)
class AddResult:
    outcome: AddOutcome
    # The blob the caller must discard (or keep as quarantine) after the commit: the new
    # bytes for DUPLICATE and CONFLICT, the replaced bytes for OVERWRITTEN.
    displaced_blob_key: str | None = None


@dataclass(frozen=True)
class StoredInstance:
    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    blob_key: str
    size_bytes: int
    number_of_frames: int | None
    instance_number: int | None


def _now() -> datetime:
    return datetime.now(UTC)


class Catalog:
    """Catalog operations over one engine (SQLite or PostgreSQL).

    A scoped catalog (:meth:`scoped`) reads only the series of its projects: a series
    outside is NotFound, as if it did not exist.
    """

    def __init__(
        self, engine: Engine, *, default_project: str = "default", scope: Scope = None
    ) -> None:
        self.engine = engine
        self.default_project = default_project
        self.scope = scope

    def scoped(self, projects: Iterable[str] | None) -> Catalog:
        """This catalog limited to the series of ``projects`` (None: all of them)."""
        return Catalog(self.engine, default_project=self.default_project, scope=as_scope(projects))

    # -- writes -------------------------------------------------------------------------
    def add(
        self,
        items: Sequence[NewInstance],
        policy: DuplicatePolicy = DuplicatePolicy.KEEP_FIRST,
    ) -> list[AddResult]:
        """Record ``items`` in one transaction; the result list matches ``items``."""
        with self.engine.begin() as conn:
            return [self._add_one(conn, item, policy) for item in items]

    def _add_one(self, conn: Connection, item: NewInstance, policy: DuplicatePolicy) -> AddResult:
        h, now = item.header, _now()
        existing = conn.execute(
            select(Instance.sha256, Instance.blob_key).where(
                Instance.sop_instance_uid == h.sop_instance_uid
            )
        ).first()
        if existing is not None:
            return self._add_known(conn, item, policy, existing.sha256, existing.blob_key, now)
        if self._ensure_parents(conn, h, now):
            assign_new_series(
                conn,
                h,
                item.calling_ae_title,
                project=item.project,
                default_project=self.default_project,
            )
        inserted = conn.execute(
            insert_ignoring_duplicates(conn, Instance.__table__).values(
                sop_instance_uid=h.sop_instance_uid,
                series_instance_uid=h.series_instance_uid,
                sop_class_uid=h.sop_class_uid,
                transfer_syntax_uid=h.transfer_syntax_uid,
                instance_number=h.instance_number,
                rows=h.rows,
                columns=h.columns,
                bits_allocated=h.bits_allocated,
                number_of_frames=h.number_of_frames,
                size_bytes=item.size_bytes,
                sha256=item.sha256,
                blob_key=item.blob_key,
                calling_ae_title=item.calling_ae_title[:16],
                received_at=now,
            )
        )
        if inserted.rowcount == 0:
            # Another process (listener or API) committed this UID since the check above:
            # decide against its row, or this instance would vanish unrecorded.
            existing = conn.execute(
                select(Instance.sha256, Instance.blob_key).where(
                    Instance.sop_instance_uid == h.sop_instance_uid
                )
            ).one()
            return self._add_known(conn, item, policy, existing.sha256, existing.blob_key, now)
        return AddResult(AddOutcome.STORED)

    def _add_known(
        self,
        conn: Connection,
        item: NewInstance,
        policy: DuplicatePolicy,
        stored_sha: str,
        stored_key: str,
        now: datetime,
    ) -> AddResult:
        if stored_sha == item.sha256:
            keep = item.blob_key == stored_key
            return AddResult(AddOutcome.DUPLICATE, None if keep else item.blob_key)
        if policy is DuplicatePolicy.OVERWRITE:
            conn.execute(
                update(Instance)
                .where(Instance.sop_instance_uid == item.header.sop_instance_uid)
                .values(
                    sha256=item.sha256,
                    blob_key=item.blob_key,
                    size_bytes=item.size_bytes,
                    transfer_syntax_uid=item.header.transfer_syntax_uid,
                    received_at=now,
                    indexed_at=None,
                    header_json=None,
                )
            )
            outcome, quarantine = AddOutcome.OVERWRITTEN, stored_key
        else:
            outcome, quarantine = AddOutcome.CONFLICT, item.blob_key
        conn.execute(
            insert(IngestConflict).values(
                sop_instance_uid=item.header.sop_instance_uid,
                stored_sha256=stored_sha,
                received_sha256=item.sha256,
                quarantine_key=quarantine,
                resolution=outcome.value,
                calling_ae_title=item.calling_ae_title[:16],
                received_at=now,
            )
        )
        return AddResult(outcome, quarantine)

    def _ensure_parents(self, conn: Connection, h: InstanceHeader, now: datetime) -> bool:
        """Insert the patient, study and series rows as needed; True for a new series."""
        conn.execute(
            insert_ignoring_duplicates(conn, Patient.__table__).values(
                patient_id=h.patient_id[:64],
                patient_name=h.patient_name[:324],
                patient_birth_date=h.patient_birth_date[:8],
                patient_sex=h.patient_sex[:16],
                created_at=now,
            )
        )
        patient_pk = conn.execute(
            select(Patient.pk).where(Patient.patient_id == h.patient_id[:64])
        ).scalar_one()
        conn.execute(
            insert_ignoring_duplicates(conn, Study.__table__).values(
                study_instance_uid=h.study_instance_uid,
                patient_pk=patient_pk,
                study_date=h.study_date[:8],
                study_time=h.study_time[:16],
                accession_number=h.accession_number[:16],
                study_id=h.study_id[:16],
                study_description=h.study_description[:64],
                referring_physician_name=h.referring_physician_name[:324],
                specific_character_set=h.specific_character_set[:128],
                created_at=now,
                updated_at=now,
            )
        )
        inserted = conn.execute(
            insert_ignoring_duplicates(conn, Series.__table__).values(
                series_instance_uid=h.series_instance_uid,
                study_instance_uid=h.study_instance_uid,
                modality=h.modality[:16],
                series_number=h.series_number,
                series_description=h.series_description[:64],
                body_part_examined=h.body_part_examined[:16],
                performed_procedure_step_start_date=h.performed_procedure_step_start_date[:8],
                performed_procedure_step_start_time=h.performed_procedure_step_start_time[:16],
                created_at=now,
                updated_at=now,
            )
        )
        if inserted.rowcount == 0:
            conn.execute(
                update(Series)
                .where(Series.series_instance_uid == h.series_instance_uid)
                .values(updated_at=now)
            )
            return False
        return True

    def set_header_json(self, sop_instance_uid: str, header_json: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(Instance)
                .where(Instance.sop_instance_uid == sop_instance_uid)
                .values(header_json=header_json)
            )

    def set_header_jsons(self, header_jsons: dict[str, str]) -> None:
        """Cache many headers in one transaction (a series' worth on first metadata use)."""
        if not header_jsons:
            return
        with self.engine.begin() as conn:
            conn.execute(
                update(Instance)
                .where(Instance.sop_instance_uid == bindparam("uid"))
                .values(header_json=bindparam("header")),
                [{"uid": uid, "header": text} for uid, text in header_jsons.items()],
            )

    # -- reads --------------------------------------------------------------------------
    def instance(self, sop_instance_uid: str) -> StoredInstance:
        rows = self._instances(Instance.sop_instance_uid == sop_instance_uid)
        if not rows:
            raise NotFound(f"instance {sop_instance_uid} not found")
        return rows[0]

    def instances_of_series(self, series_instance_uid: str) -> list[StoredInstance]:
        rows = self._instances(Instance.series_instance_uid == series_instance_uid)
        if not rows:
            raise NotFound(f"series {series_instance_uid} not found")
        return rows

    def instances_of_study(self, study_instance_uid: str) -> list[StoredInstance]:
        rows = self._instances(Series.study_instance_uid == study_instance_uid)
        if not rows:
            raise NotFound(f"study {study_instance_uid} not found")
        return rows

    def _instances(self, where: object) -> list[StoredInstance]:
        in_scope = series_in_scope(self.scope)
        query = (
            select(
                Instance.sop_instance_uid,
                Instance.series_instance_uid,
                Series.study_instance_uid,
                Instance.sop_class_uid,
                Instance.transfer_syntax_uid,
                Instance.blob_key,
                Instance.size_bytes,
                Instance.number_of_frames,
                Instance.instance_number,
            )
            .join(Series, Series.series_instance_uid == Instance.series_instance_uid)
            .where(where)  # type: ignore[arg-type]
            .where(*([] if in_scope is None else [in_scope]))
            .order_by(
                Series.series_instance_uid, Instance.instance_number, Instance.sop_instance_uid
            )
        )
        with self.engine.connect() as conn:
            return [StoredInstance(**row._mapping) for row in conn.execute(query)]

    def header_json_of(self, sop_instance_uids: Sequence[str]) -> dict[str, str | None]:
        """Cached DICOM JSON headers by SOP Instance UID (None where not yet cached)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(Instance.sop_instance_uid, Instance.header_json).where(
                    Instance.sop_instance_uid.in_(list(sop_instance_uids))
                )
            )
            return {row.sop_instance_uid: row.header_json for row in rows}

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            return {
                "patients": conn.execute(select(func.count()).select_from(Patient)).scalar_one(),
                "studies": conn.execute(select(func.count()).select_from(Study)).scalar_one(),
                "series": conn.execute(select(func.count()).select_from(Series)).scalar_one(),
                "instances": conn.execute(select(func.count()).select_from(Instance)).scalar_one(),
                "conflicts": conn.execute(
                    select(func.count()).select_from(IngestConflict)
                ).scalar_one(),
            }

    def conflicts(self, limit: int = 100) -> list[dict[str, object]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(IngestConflict).order_by(IngestConflict.pk.desc()).limit(limit)
            )
            return [dict(row._mapping) for row in rows]

    # -- outbox for META ----------------------------------------------------------------
    def unindexed(self, limit: int) -> list[StoredInstance]:
        """Instances not yet indexed, oldest first."""
        query = (
            select(Instance.sop_instance_uid)
            .where(Instance.indexed_at.is_(None), Instance.index_error.is_(None))
            .order_by(Instance.received_at)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            uids = list(conn.execute(query).scalars())
        return self._instances(Instance.sop_instance_uid.in_(uids)) if uids else []

    def mark_indexed(self, sop_instance_uids: Sequence[str], error: str | None = None) -> None:
        values: dict[str, object] = (
            {"indexed_at": _now()} if error is None else {"index_error": error}
        )
        with self.engine.begin() as conn:
            conn.execute(
                update(Instance)
                .where(Instance.sop_instance_uid.in_(list(sop_instance_uids)))
                .values(**values)
            )

    # -- deletion -----------------------------------------------------------------------
    def delete_study(self, study_instance_uid: str) -> list[str]:
        """Remove a study's rows; returns the blob keys the caller must delete."""
        with self.engine.begin() as conn:
            series_uids = list(
                conn.execute(
                    select(Series.series_instance_uid).where(
                        Series.study_instance_uid == study_instance_uid
                    )
                ).scalars()
            )
            if not series_uids:
                raise NotFound(f"study {study_instance_uid} not found")
            keys = self._delete_series_rows(conn, series_uids)
            conn.execute(delete(Study).where(Study.study_instance_uid == study_instance_uid))
            self._delete_orphan_patients(conn)
            return keys

    def delete_series(self, series_instance_uid: str) -> list[str]:
        """Remove a series' rows (and its study if it was the last series)."""
        with self.engine.begin() as conn:
            study_uid = conn.execute(
                select(Series.study_instance_uid).where(
                    Series.series_instance_uid == series_instance_uid
                )
            ).scalar_one_or_none()
            if study_uid is None:
                raise NotFound(f"series {series_instance_uid} not found")
            keys = self._delete_series_rows(conn, [series_instance_uid])
            remaining = conn.execute(
                select(func.count())
                .select_from(Series)
                .where(Series.study_instance_uid == study_uid)
            ).scalar_one()
            if remaining == 0:
                conn.execute(delete(Study).where(Study.study_instance_uid == study_uid))
                self._delete_orphan_patients(conn)
            return keys

    @staticmethod
    def _delete_series_rows(conn: Connection, series_uids: list[str]) -> list[str]:
        keys = list(
            conn.execute(
                select(Instance.blob_key).where(Instance.series_instance_uid.in_(series_uids))
            ).scalars()
        )
        conn.execute(delete(Instance).where(Instance.series_instance_uid.in_(series_uids)))
        conn.execute(
            delete(SeriesProject).where(SeriesProject.series_instance_uid.in_(series_uids))
        )
        conn.execute(delete(Series).where(Series.series_instance_uid.in_(series_uids)))
        return keys

    @staticmethod
    def _delete_orphan_patients(conn: Connection) -> None:
        conn.execute(delete(Patient).where(~Patient.pk.in_(select(Study.patient_pk).distinct())))
