"""Which projects a series belongs to: assignment rules, manual assignment, visibility.

A series is assigned when it is first catalogued, inside the catalog's own transaction
(:meth:`jip.store.catalog.catalog.Catalog.add`): to the project a STOW-RS caller named, else to
the project of every enabled rule that matches, else to ``store.default_project``. A
rule matches on the calling AE title, on one header field (a wildcard pattern, ``*`` and
``?``, case-insensitive, as PS3.4 C.2.2.2.4 matches strings), or on both.

A scope is the set of project names a caller may see, or None for everything (site
admins, and every caller while authentication is off).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Engine,
    String,
    column,
    delete,
    insert,
    select,
    table,
    update,
)
from sqlalchemy.engine import Connection

from jip.db import insert_ignoring_duplicates
from jip.errors import Invalid, NotFound
from jip.store.catalog.tables import Instance, ProjectRule, Series, SeriesProject
from jip.store.dicom_file import InstanceHeader

log = logging.getLogger(__name__)
Scope = frozenset[str] | None
# The identity tables are BASE's; only the project names are read here.
_PROJECTS = table("projects", column("name", String))

# DICOM keyword → InstanceHeader attribute a rule may match on.
RULE_FIELDS: dict[str, str] = {
    "InstitutionName": "institution_name",
    "StudyDescription": "study_description",
    "SeriesDescription": "series_description",
    "Modality": "modality",
    "BodyPartExamined": "body_part_examined",
    "AccessionNumber": "accession_number",
    "StudyID": "study_id",
    "PatientID": "patient_id",
    "ReferringPhysicianName": "referring_physician_name",
}


def as_scope(projects: Iterable[str] | None) -> Scope:
    return None if projects is None else frozenset(projects)


def visible_series(scope: Collection[str]) -> Any:
    """A subquery of the Series Instance UIDs assigned to any project of ``scope``."""
    return select(SeriesProject.series_instance_uid).where(SeriesProject.project.in_(sorted(scope)))


def series_in_scope(scope: Scope) -> ColumnElement[bool] | None:
    """The condition on ``Series.series_instance_uid`` for ``scope`` (None: no condition)."""
    if scope is None:
        return None
    return Series.series_instance_uid.in_(visible_series(scope))


@dataclass(frozen=True)
class RuleInfo:
    pk: int
    project: str
    calling_ae_title: str
    field: str
    pattern: str
    enabled: bool


def _wildcard(pattern: str) -> re.Pattern[str]:
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


def rule_matches(rule: RuleInfo, header: InstanceHeader, calling_ae_title: str) -> bool:
    if rule.calling_ae_title and rule.calling_ae_title.strip() != calling_ae_title.strip():
        return False
    if rule.field:
        value = str(getattr(header, RULE_FIELDS[rule.field], "") or "")
        if not _wildcard(rule.pattern).fullmatch(value):
            return False
    return bool(rule.calling_ae_title or rule.field)


def check_rule(calling_ae_title: str, field: str, pattern: str) -> None:
    if not calling_ae_title.strip() and not field:
        raise Invalid("a project rule needs a calling_ae_title, a field, or both")
    if len(calling_ae_title) > 16:
        raise Invalid(f"calling_ae_title {calling_ae_title!r} is longer than 16 characters")
    if field and field not in RULE_FIELDS:
        raise Invalid(f"field {field!r} cannot be matched: use one of {sorted(RULE_FIELDS)}")
    if field and not pattern:
        raise Invalid(f"field {field!r} needs a pattern (use '*' for any value)")
    if len(pattern) > 128:
        raise Invalid("pattern is longer than 128 characters")


def _rule(row: Any) -> RuleInfo:
    return RuleInfo(
        row.pk, row.project, row.calling_ae_title, row.field, row.pattern, bool(row.enabled)
    )


def assign_new_series(
    conn: Connection,
    header: InstanceHeader,
    calling_ae_title: str,
    *,
    project: str | None,
    default_project: str,
) -> list[str]:
    """Assign a series catalogued in this transaction; returns its projects."""
    assigned: dict[str, str] = {}
    if project is not None:
        assigned[project] = "stow"
    else:
        rows = conn.execute(select(ProjectRule).where(ProjectRule.enabled.is_(True)))
        for rule in map(_rule, rows):
            if rule_matches(rule, header, calling_ae_title):
                assigned.setdefault(rule.project, f"rule:{rule.pk}")
    if not assigned:
        assigned[default_project] = "default"
    # A project removed meanwhile (even the default one) must not fail the ingest: its
    # series stays unassigned, seen by site admins only, until someone assigns it.
    existing = set(
        conn.execute(
            select(_PROJECTS.c.name).where(_PROJECTS.c.name.in_(sorted(assigned)))
        ).scalars()
    )
    if len(existing) < len(assigned):
        log.warning(
            "series assigned to a project that does not exist",
            extra={
                "series_instance_uid": header.series_instance_uid,
                "projects": sorted(set(assigned) - existing),
            },
        )
    now = datetime.now(UTC)
    for name, how in assigned.items():
        if name not in existing:
            continue
        conn.execute(
            insert_ignoring_duplicates(conn, SeriesProject.__table__).values(
                series_instance_uid=header.series_instance_uid,
                project=name,
                assigned_at=now,
                assigned_by=how,
            )
        )
    return sorted(existing)


class SeriesProjects:
    """Project assignments and assignment rules over the catalog's engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- assignments --------------------------------------------------------------------
    def projects_of(self, series_uids: Iterable[str]) -> dict[str, set[str]]:
        uids = sorted(set(series_uids))
        found: dict[str, set[str]] = {uid: set() for uid in uids}
        if not uids:
            return found
        query = select(SeriesProject.series_instance_uid, SeriesProject.project).where(
            SeriesProject.series_instance_uid.in_(uids)
        )
        with self.engine.connect() as conn:
            for uid, project in conn.execute(query):
                found[uid].add(project)
        return found

    def assign(self, series_uid: str, project: str, *, by: str = "manual") -> None:
        with self.engine.begin() as conn:
            self._series_exists(conn, series_uid)
            conn.execute(
                insert_ignoring_duplicates(conn, SeriesProject.__table__).values(
                    series_instance_uid=series_uid,
                    project=project,
                    assigned_at=datetime.now(UTC),
                    assigned_by=by,
                )
            )
            reindex_series(conn, series_uid)

    def unassign(self, series_uid: str, project: str) -> None:
        with self.engine.begin() as conn:
            removed = conn.execute(
                delete(SeriesProject).where(
                    SeriesProject.series_instance_uid == series_uid,
                    SeriesProject.project == project,
                )
            )
            if removed.rowcount == 0:
                raise NotFound(f"series {series_uid} not found in project {project!r}")
            reindex_series(conn, series_uid)

    def may_add_instance(
        self,
        header: InstanceHeader,
        *,
        visible: Collection[str],
        writable: Collection[str],
    ) -> bool:
        """Whether a caller who sees the series of the ``visible`` projects, and writes
        those of ``writable``, may store this instance (a STOW-RS part).

        The instance may join, or with a known SOP Instance UID replace or duplicate an
        instance of, only series of ``writable``; and it may start a new series only in
        a new study or in one where the caller sees a series. Everything else is the
        same refusal, so that it tells nothing of which UID is taken, or by whom.
        """
        with self.engine.connect() as conn:
            known_sop = select(Instance.series_instance_uid).where(
                Instance.sop_instance_uid == header.sop_instance_uid
            )
            touched = {header.series_instance_uid, *conn.execute(known_sop).scalars()}
            existing = set(
                conn.execute(
                    select(Series.series_instance_uid).where(
                        Series.series_instance_uid.in_(sorted(touched))
                    )
                ).scalars()
            )
            if existing - set(
                conn.execute(
                    select(SeriesProject.series_instance_uid).where(
                        SeriesProject.series_instance_uid.in_(sorted(existing)),
                        SeriesProject.project.in_(sorted(writable)),
                    )
                ).scalars()
            ):
                return False
            of_study = select(Series.series_instance_uid).where(
                Series.study_instance_uid == header.study_instance_uid
            )
            if conn.execute(of_study.limit(1)).first() is None:
                return True
            seen = of_study.where(Series.series_instance_uid.in_(visible_series(visible)))
            return conn.execute(seen.limit(1)).first() is not None

    @staticmethod
    def _series_exists(conn: Connection, series_uid: str) -> None:
        found = conn.execute(
            select(Series.series_instance_uid).where(Series.series_instance_uid == series_uid)
        ).first()
        if found is None:
            raise NotFound(f"series {series_uid} not found")

    # -- rules --------------------------------------------------------------------------
    def rules(self) -> list[RuleInfo]:
        with self.engine.connect() as conn:
            return [_rule(r) for r in conn.execute(select(ProjectRule).order_by(ProjectRule.pk))]

    def rule(self, pk: int) -> RuleInfo:
        with self.engine.connect() as conn:
            row = conn.execute(select(ProjectRule).where(ProjectRule.pk == pk)).first()
        if row is None:
            raise NotFound(f"no project rule {pk}")
        return _rule(row)

    def add_rule(
        self,
        project: str,
        *,
        calling_ae_title: str = "",
        field: str = "",
        pattern: str = "",
        enabled: bool = True,
    ) -> RuleInfo:
        check_rule(calling_ae_title, field, pattern)
        with self.engine.begin() as conn:
            pk = conn.execute(
                insert(ProjectRule)
                .returning(ProjectRule.pk)
                .values(
                    project=project,
                    calling_ae_title=calling_ae_title.strip(),
                    field=field,
                    pattern=pattern,
                    enabled=enabled,
                    created_at=datetime.now(UTC),
                )
            ).scalar_one()
        return self.rule(pk)

    def update_rule(self, pk: int, **changes: Any) -> RuleInfo:
        current = self.rule(pk)
        merged = {
            "calling_ae_title": current.calling_ae_title,
            "field": current.field,
            "pattern": current.pattern,
            **{k: v for k, v in changes.items() if v is not None},
        }
        check_rule(merged["calling_ae_title"], merged["field"], merged["pattern"])
        with self.engine.begin() as conn:
            conn.execute(
                update(ProjectRule)
                .where(ProjectRule.pk == pk)
                .values(**{k: v for k, v in changes.items() if v is not None})
            )
        return self.rule(pk)

    def remove_rule(self, pk: int) -> None:
        with self.engine.begin() as conn:
            if conn.execute(delete(ProjectRule).where(ProjectRule.pk == pk)).rowcount == 0:
                raise NotFound(f"no project rule {pk}")

    def forget_project(self, project: str) -> None:
        """Drop the assignments and rules of a removed project."""
        with self.engine.begin() as conn:
            conn.execute(delete(SeriesProject).where(SeriesProject.project == project))
            conn.execute(delete(ProjectRule).where(ProjectRule.project == project))


def reindex_series(conn: Connection, series_uid: str) -> None:
    """Put the series back into META's outbox, so its document carries the new projects."""
    conn.execute(
        update(Instance).where(Instance.series_instance_uid == series_uid).values(indexed_at=None)
    )
