"""Recording received instances: the catalog's write path, run once per instance.

Nearly every instance joins a series the catalog already holds, so that case costs two
statements: the instance row is inserted only where its series, study and patient rows
are already there (exactly when the parents' own inserts would do nothing), and the
series' ``updated_at`` is refreshed. Everything else (a series' first instance, a known
SOP Instance UID, a series deleted meanwhile by another process) takes the full path
below. Statements are built once with bind parameters, so SQLAlchemy's compiled cache
serves them: building them per row cost more than the database work; the two of the
common case skip even that cache and run as SQL text compiled once
(:class:`jip.db.DriverStatement`).
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, exists, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from jip.db import DriverStatement, insert_ignoring_duplicates
from jip.store.catalog.projects import assign_new_series
from jip.store.catalog.tables import IngestConflict, Instance, Patient, Series, Study
from jip.store.catalog.write_lock import WriteLock
from jip.store.dicom_file import InstanceHeader


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


def _columns(table: Any, names: Sequence[str]) -> dict[str, Any]:
    return {name: bindparam(name, type_=table.c[name].type) for name in names}


_INSTANCE = Instance.__table__
_INSTANCE_VALUES = _columns(
    _INSTANCE,
    (
        "sop_instance_uid",
        "series_instance_uid",
        "sop_class_uid",
        "transfer_syntax_uid",
        "instance_number",
        "rows",
        "columns",
        "bits_allocated",
        "number_of_frames",
        "size_bytes",
        "sha256",
        "blob_key",
        "calling_ae_title",
        "received_at",
    ),
)
_INSERT_INSTANCE = insert_ignoring_duplicates(None, _INSTANCE).values(_INSTANCE_VALUES)
_INSERT_INSTANCE_OF_KNOWN_SERIES = DriverStatement(
    insert_ignoring_duplicates(None, _INSTANCE).from_select(
        list(_INSTANCE_VALUES),
        select(*_INSTANCE_VALUES.values()).where(
            exists().where(Series.series_instance_uid == bindparam("series")),
            exists().where(Study.study_instance_uid == bindparam("study")),
            exists().where(Patient.patient_id == bindparam("patient")),
        ),
    )
)
_TOUCH_SERIES = DriverStatement(
    update(Series)
    .where(Series.series_instance_uid == bindparam("series"))
    .values(updated_at=bindparam("now", type_=Series.__table__.c.updated_at.type))
)
_STORED = select(Instance.sha256, Instance.blob_key).where(
    Instance.sop_instance_uid == bindparam("sop_instance_uid")
)
_INSERT_PATIENT = insert_ignoring_duplicates(None, Patient.__table__).values(
    _columns(Patient.__table__, ("patient_id", "patient_name", "patient_birth_date"))
    | _columns(Patient.__table__, ("patient_sex", "created_at"))
)
_PATIENT_PK = select(Patient.pk).where(Patient.patient_id == bindparam("patient_id"))
_INSERT_STUDY = insert_ignoring_duplicates(None, Study.__table__).values(
    _columns(
        Study.__table__,
        (
            "study_instance_uid",
            "patient_pk",
            "study_date",
            "study_time",
            "accession_number",
            "study_id",
            "study_description",
            "referring_physician_name",
            "specific_character_set",
            "created_at",
            "updated_at",
        ),
    )
)
_INSERT_SERIES = insert_ignoring_duplicates(None, Series.__table__).values(
    _columns(
        Series.__table__,
        (
            "series_instance_uid",
            "study_instance_uid",
            "modality",
            "series_number",
            "series_description",
            "body_part_examined",
            "performed_procedure_step_start_date",
            "performed_procedure_step_start_time",
            "created_at",
            "updated_at",
        ),
    )
)


class CatalogWriter:
    """The ingest path's own connection, held from one batch to the next.

    Checking a pooled connection out and back in for each batch cost ~0.05 ms, a tenth
    of the CPU a small instance takes. Batches come one at a time from the group
    committer (the lock only guards other callers). A connection lost with its database
    (a PostgreSQL restart) is replaced, and the batch it held tried again. ``exclusive``
    is the group committer's gate: one listener process writes at a time on SQLite.
    """

    def __init__(self, engine: Engine, policy: DuplicatePolicy, default_project: str) -> None:
        self.engine = engine
        self.policy = policy
        self.default_project = default_project
        self._conn: Connection | None = None
        self._lock = threading.Lock()
        self._write_lock = WriteLock.for_engine(engine)
        self.exclusive = self._write_lock.held

    def add(self, items: Sequence[NewInstance]) -> list[AddResult]:
        """Record ``items`` in one transaction; the result list matches ``items``."""
        with self._lock:
            if self._conn is None:
                self._conn = self.engine.connect()
            try:
                return self._add(self._conn, items)
            except DBAPIError as exc:
                if not exc.connection_invalidated:
                    raise
            # The connection was lost (a database restart) and the batch rolled back
            # with it: once more on a new one, as a pooled checkout's ping would have.
            return self._add(self._conn, items)

    def _add(self, conn: Connection, items: Sequence[NewInstance]) -> list[AddResult]:
        with conn.begin():
            return add_instances(conn, items, self.policy, self.default_project)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        self._write_lock.close()


def add_instances(
    conn: Connection,
    items: Sequence[NewInstance],
    policy: DuplicatePolicy,
    default_project: str,
) -> list[AddResult]:
    """Record ``items`` in the caller's transaction; the result list matches ``items``."""
    return [_add_one(conn, item, policy, default_project) for item in items]


def _add_one(
    conn: Connection, item: NewInstance, policy: DuplicatePolicy, default_project: str
) -> AddResult:
    h, now = item.header, datetime.now(UTC)
    row: dict[str, Any] = {
        "sop_instance_uid": h.sop_instance_uid,
        "series_instance_uid": h.series_instance_uid,
        "sop_class_uid": h.sop_class_uid,
        "transfer_syntax_uid": h.transfer_syntax_uid,
        "instance_number": h.instance_number,
        "rows": h.rows,
        "columns": h.columns,
        "bits_allocated": h.bits_allocated,
        "number_of_frames": h.number_of_frames,
        "size_bytes": item.size_bytes,
        "sha256": item.sha256,
        "blob_key": item.blob_key,
        "calling_ae_title": item.calling_ae_title[:16],
        "received_at": now,
    }
    series = {"series": h.series_instance_uid, "now": now}
    parents = {"study": h.study_instance_uid, "patient": h.patient_id[:64]}
    if _INSERT_INSTANCE_OF_KNOWN_SERIES.execute(conn, row | series | parents) == 1:
        _TOUCH_SERIES.execute(conn, series)
        return AddResult(AddOutcome.STORED)
    stored = conn.execute(_STORED, row).first()
    if stored is not None:
        return _add_known(conn, item, policy, stored.sha256, stored.blob_key, now)
    if _ensure_parents(conn, h, now):
        assign_new_series(
            conn, h, item.calling_ae_title, project=item.project, default_project=default_project
        )
    if conn.execute(_INSERT_INSTANCE, row).rowcount == 0:
        # Another process (listener or API) committed this UID since the check above:
        # decide against its row, or this instance would vanish unrecorded.
        stored = conn.execute(_STORED, row).one()
        return _add_known(conn, item, policy, stored.sha256, stored.blob_key, now)
    return AddResult(AddOutcome.STORED)


def _add_known(
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


def _ensure_parents(conn: Connection, h: InstanceHeader, now: datetime) -> bool:
    """Insert the patient, study and series rows as needed; True for a new series."""
    conn.execute(
        _INSERT_PATIENT,
        {
            "patient_id": h.patient_id[:64],
            "patient_name": h.patient_name[:324],
            "patient_birth_date": h.patient_birth_date[:8],
            "patient_sex": h.patient_sex[:16],
            "created_at": now,
        },
    )
    patient_pk = conn.execute(_PATIENT_PK, {"patient_id": h.patient_id[:64]}).scalar_one()
    conn.execute(
        _INSERT_STUDY,
        {
            "study_instance_uid": h.study_instance_uid,
            "patient_pk": patient_pk,
            "study_date": h.study_date[:8],
            "study_time": h.study_time[:16],
            "accession_number": h.accession_number[:16],
            "study_id": h.study_id[:16],
            "study_description": h.study_description[:64],
            "referring_physician_name": h.referring_physician_name[:324],
            "specific_character_set": h.specific_character_set[:128],
            "created_at": now,
            "updated_at": now,
        },
    )
    inserted = conn.execute(
        _INSERT_SERIES,
        {
            "series_instance_uid": h.series_instance_uid,
            "study_instance_uid": h.study_instance_uid,
            "modality": h.modality[:16],
            "series_number": h.series_number,
            "series_description": h.series_description[:64],
            "body_part_examined": h.body_part_examined[:16],
            "performed_procedure_step_start_date": h.performed_procedure_step_start_date[:8],
            "performed_procedure_step_start_time": h.performed_procedure_step_start_time[:16],
            "created_at": now,
            "updated_at": now,
        },
    )
    if inserted.rowcount == 0:
        _TOUCH_SERIES.execute(conn, {"series": h.series_instance_uid, "now": now})
        return False
    return True
