"""The catalog: what is stored, where, and how it hangs together.

Writes come in batches (see :mod:`jip.store.catalog.group_commit`) so that one transaction, and
one fsync, covers all instances that arrived while the previous batch committed; the
rows themselves are written by :mod:`jip.store.catalog.add`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

from sqlalchemy import Engine, bindparam, case, func, select, true, update
from sqlalchemy.engine import Connection
from sqlalchemy.sql import ColumnElement

from jip.errors import NotFound
from jip.store.catalog import deletion
from jip.store.catalog.add import AddOutcome as AddOutcome
from jip.store.catalog.add import AddResult as AddResult
from jip.store.catalog.add import DuplicatePolicy as DuplicatePolicy
from jip.store.catalog.add import NewInstance as NewInstance
from jip.store.catalog.add import add_instances
from jip.store.catalog.projects import (
    Scope,
    as_scope,
    series_in_scope,
    visible_series,
)
from jip.store.catalog.tables import (
    IngestConflict,
    Instance,
    Patient,
    Series,
    Study,
)


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


class FailedInstance(NamedTuple):
    """An instance whose header could not be indexed (:meth:`Catalog.index_failures`)."""

    sop_instance_uid: str
    series_instance_uid: str
    error: str
    received_at: datetime


def _now() -> datetime:
    return datetime.now(UTC)


def existing_instances(conn: Connection, sop_instance_uids: Sequence[str]) -> set[str]:
    """Which of ``sop_instance_uids`` the catalog holds, read in the caller's transaction.

    For META, which writes instance summaries and skips the instances deleted meanwhile
    in one transaction (on SQLite the write must come first, to take the lock).
    """
    query = select(Instance.sop_instance_uid).where(
        Instance.sop_instance_uid.in_(list(sop_instance_uids))
    )
    return set(conn.execute(query).scalars())


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
            return add_instances(conn, items, policy, self.default_project)

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

    def studies_of(self, series_uids: Sequence[str]) -> dict[str, str]:
        """Study Instance UID of each given series in scope (series not found are left out)."""
        found: dict[str, str] = {}
        query = select(Series.series_instance_uid, Series.study_instance_uid)
        in_scope = series_in_scope(self.scope)
        if in_scope is not None:
            query = query.where(in_scope)
        with self.engine.connect() as conn:
            for start in range(0, len(series_uids), 500):
                chunk = list(series_uids[start : start + 500])
                rows = conn.execute(query.where(Series.series_instance_uid.in_(chunk)))
                found.update({row[0]: row[1] for row in rows})
        return found

    def series_updated_between(self, since: datetime, until: datetime) -> list[str]:
        """Series whose last instance arrived in (``since``, ``until``], oldest first."""
        query = select(Series.series_instance_uid).where(
            Series.updated_at > since, Series.updated_at <= until
        )
        with self.engine.connect() as conn:
            return [row[0] for row in conn.execute(query.order_by(Series.updated_at))]

    def counts(self, scope: Scope = None) -> dict[str, int]:
        """How many of each are catalogued (of the series of the projects in ``scope``)."""
        if scope is not None:
            return self._counts_in(scope)
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

    def _counts_in(self, scope: frozenset[str]) -> dict[str, int]:
        visible = visible_series(scope)
        in_series = Series.series_instance_uid.in_(visible)
        in_instances = Instance.series_instance_uid.in_(visible)
        queries = {
            "patients": select(func.count(func.distinct(Study.patient_pk)))
            .select_from(Series)
            .join(Study, Study.study_instance_uid == Series.study_instance_uid)
            .where(in_series),
            "studies": select(func.count(func.distinct(Series.study_instance_uid))).where(
                in_series
            ),
            "series": select(func.count()).select_from(Series).where(in_series),
            "instances": select(func.count()).select_from(Instance).where(in_instances),
            "conflicts": select(func.count())
            .select_from(IngestConflict)
            .join(Instance, Instance.sop_instance_uid == IngestConflict.sop_instance_uid)
            .where(in_instances),
        }
        with self.engine.connect() as conn:
            return {name: int(conn.execute(query).scalar_one()) for name, query in queries.items()}

    def conflicts(self, limit: int = 100) -> list[dict[str, object]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(IngestConflict).order_by(IngestConflict.pk.desc()).limit(limit)
            )
            return [dict(row._mapping) for row in rows]

    def existing_series(self, series_uids: Sequence[str]) -> set[str]:
        """Which of ``series_uids`` the catalog holds (of the scope)."""
        return set(self.studies_of(series_uids))

    def stored_bytes(self) -> int:
        """The size of every catalogued instance, as received."""
        query = select(func.coalesce(func.sum(Instance.size_bytes), 0))
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

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

    def oldest_unindexed_at(self) -> datetime | None:
        """When the oldest instance still waiting for the indexer arrived (index lag)."""
        query = select(func.min(Instance.received_at)).where(
            Instance.indexed_at.is_(None), Instance.index_error.is_(None)
        )
        with self.engine.connect() as conn:
            oldest: datetime | None = conn.execute(query).scalar()
        if oldest is not None and oldest.tzinfo is None:  # SQLite hands back naive UTC
            oldest = oldest.replace(tzinfo=UTC)
        return oldest

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

    def series_pending_index(self, series_uids: Sequence[str]) -> set[str]:
        """Which of ``series_uids`` have an instance not indexed yet (their document may
        still miss it)."""
        query = (
            select(Instance.series_instance_uid)
            .where(Instance.series_instance_uid.in_(sorted(series_uids)))
            .where(Instance.indexed_at.is_(None))
            .distinct()
        )
        with self.engine.connect() as conn:
            return set(conn.execute(query).scalars())

    def index_failures(self, offset: int = 0, limit: int = 100) -> tuple[int, list[FailedInstance]]:
        """Instances whose header failed (of the scope), newest first, and how many."""
        failed = Instance.index_error.is_not(None) & self._instances_in_scope()
        query = (
            select(
                Instance.sop_instance_uid,
                Instance.series_instance_uid,
                Instance.index_error,
                Instance.received_at,
            )
            .where(failed)
            .order_by(Instance.received_at.desc(), Instance.sop_instance_uid)
        )
        with self.engine.connect() as conn:
            total = conn.execute(select(func.count()).where(failed)).scalar_one()
            rows = conn.execute(query.offset(offset).limit(limit))
            return int(total), [FailedInstance(a, b, str(c), d) for a, b, c, d in rows]

    def outbox_counts(self) -> tuple[int, int]:
        """(waiting, failed): instances of the scope not indexed, and why not."""
        # Both counts read only rows not yet indexed (the outbox index finds them), so
        # they stay cheap however large the catalog grows.
        failed = Instance.index_error.is_not(None)
        query = select(func.count(case((~failed, 1))), func.count(case((failed, 1)))).where(
            Instance.indexed_at.is_(None), self._instances_in_scope()
        )
        with self.engine.connect() as conn:
            pending, errors = conn.execute(query).one()
        return int(pending), int(errors)

    def requeue_all(self) -> int:
        """Put every instance back into the outbox (errors included); returns how many."""
        with self.engine.begin() as conn:
            result = conn.execute(update(Instance).values(indexed_at=None, index_error=None))
            return int(result.rowcount)

    def _instances_in_scope(self) -> ColumnElement[bool]:
        if self.scope is None:
            return true()
        return Instance.series_instance_uid.in_(visible_series(self.scope))

    # -- deletion -----------------------------------------------------------------------
    def delete_study(self, study_instance_uid: str) -> list[str]:
        """Remove a study's rows; returns the blob keys the caller must delete."""
        with self.engine.begin() as conn:
            return deletion.delete_study(conn, study_instance_uid)

    def delete_series(self, series_instance_uid: str) -> list[str]:
        """Remove a series' rows (and its study if it was the last series)."""
        with self.engine.begin() as conn:
            return deletion.delete_series(conn, series_instance_uid)

    def delete_series_of(self, series_instance_uid: str, owned: Iterable[str] | None) -> list[str]:
        """Remove a series from the projects of ``owned`` (None: everywhere); the rows and
        blob keys go only when no other project holds it
        (:func:`jip.store.catalog.deletion.delete_series_of`)."""
        with self.engine.begin() as conn:
            projects = None if owned is None else frozenset(owned)
            return deletion.delete_series_of(conn, series_instance_uid, projects)
