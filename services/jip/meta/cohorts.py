"""Saved cohorts: a named cohort query owned by a project, optionally frozen.

A cohort is live by default: its series are whatever its query matches now. Frozen, it
keeps the list of series its query matched at that moment (a reproducible analysis
input) until it is unfrozen. Every call takes the caller and sees only cohorts of the
caller's projects (:func:`jip.base.project_scope`); a cohort outside them does not
exist for the caller (NotFound). Changing a cohort needs the researcher role.

A cohort travels between sites as an export (:mod:`jip.meta.cohort_export`): the query,
which any site can import and run unchanged.
"""

from __future__ import annotations

import builtins
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, delete, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from jip.base import CurrentUser, Project, ProjectRole, project_scope, require_project_role
from jip.errors import Conflict, Invalid, NotFound
from jip.meta.cohort_export import (
    EXPORT_FORMAT,
    EXPORT_VERSION,
    check_description,
    check_name,
    check_query,
    parse_export,
)
from jip.meta.fields import FIELDS, ID_FIELD
from jip.meta.index import MetaIndex, SearchResult
from jip.meta.limits import DEFAULT_LIMITS, QueryLimits
from jip.meta.query import Query, Terms, parse_query
from jip.meta.schema import Cohort, CohortSeries
from jip.meta.service import BY_UID, matching_uids, project_query, scoped_hits


@dataclass(frozen=True)
class CohortInfo:
    id: str
    name: str
    description: str
    project: str
    query: dict[str, Any]
    frozen_at: datetime | None
    frozen_series: int | None  # how many series a frozen cohort holds
    source_site: str
    created_by: str
    created_at: datetime
    updated_at: datetime

    @property
    def frozen(self) -> bool:
        return self.frozen_at is not None


@dataclass(frozen=True)
class CohortSeriesPage:
    total: int
    frozen: bool
    hits: list[dict[str, Any]]


class Cohorts:
    """Saved cohorts over the catalog ``engine``, run against ``index``."""

    def __init__(
        self, engine: Engine, index: MetaIndex, site: str, *, limits: QueryLimits = DEFAULT_LIMITS
    ) -> None:
        self.engine = engine
        self.index = index
        self.site = site
        self.limits = limits  # what a cohort's query may ask of the index

    # -- reading ------------------------------------------------------------------------
    def list(self, user: CurrentUser, project: str | None = None) -> builtins.list[CohortInfo]:
        query = select(Cohort).order_by(Cohort.project, Cohort.name)
        scope = project_scope(user)
        if scope is not None:
            query = query.where(Cohort.project.in_(sorted(scope)))
        if project is not None:
            query = query.where(Cohort.project == project)
        with Session(self.engine) as session:
            rows = list(session.scalars(query))
            counts = _frozen_counts(session, [r.id for r in rows if r.frozen_at is not None])
            return [_info(row, counts.get(row.id)) for row in rows]

    def get(self, user: CurrentUser, cohort_id: str) -> CohortInfo:
        with Session(self.engine) as session:
            row = _visible(session, user, cohort_id)
            return _info(row, _frozen_counts(session, [row.id]).get(row.id))

    def series(
        self,
        user: CurrentUser,
        cohort_id: str,
        *,
        offset: int = 0,
        limit: int = 100,
        fields: builtins.list[str] | None = None,
    ) -> CohortSeriesPage:
        """A page of the cohort's series: the query run now, or the frozen list."""
        with Session(self.engine) as session:
            row = _visible(session, user, cohort_id)
            query, frozen = _cohort_query(row, self.limits), row.frozen_at is not None
            if frozen:
                total = _frozen_counts(session, [row.id]).get(row.id, 0)
                uids = list(
                    session.scalars(
                        select(CohortSeries.series_instance_uid)
                        .where(CohortSeries.cohort_id == row.id)
                        .order_by(CohortSeries.position)
                        .offset(offset)
                        .limit(limit)
                    )
                )
                hits = self._documents(uids, fields, row.project)
                return CohortSeriesPage(total, True, scoped_hits(hits, project_scope(user)))
        found = self.index.search(query, sort=BY_UID, offset=offset, limit=limit, fields=fields)
        return CohortSeriesPage(found.total, False, scoped_hits(found.hits, project_scope(user)))

    def series_uids(self, user: CurrentUser, cohort_id: str) -> builtins.list[str]:
        """Every series of the cohort (a workflow's input)."""
        with Session(self.engine) as session:
            row = _visible(session, user, cohort_id)
            if row.frozen_at is not None:
                return _frozen_uids(session, row.id)
            query = _cohort_query(row, self.limits)
        return [uid for page in matching_uids(self.index, query) for uid in page]

    def export(
        self, user: CurrentUser, cohort_id: str, include_series: bool = False
    ) -> dict[str, Any]:
        """The cohort as a document any site can import (see :meth:`import_document`)."""
        info = self.get(user, cohort_id)
        document: dict[str, Any] = {
            "format": EXPORT_FORMAT,
            "format_version": EXPORT_VERSION,
            "name": info.name,
            "description": info.description,
            "query": info.query,
            "created_at": info.created_at.isoformat(),
            "source_site": self.site,
            "exported_at": datetime.now(UTC).isoformat(),
        }
        if include_series:
            document["series"] = self.series_uids(user, cohort_id)
        return document

    # -- writing ------------------------------------------------------------------------
    def create(
        self,
        user: CurrentUser,
        *,
        name: str,
        query: object,
        project: str | None = None,
        description: str = "",
        freeze: bool = False,
        source_site: str = "",
        series: builtins.list[str] | None = None,
    ) -> CohortInfo:
        """Save a cohort; ``freeze`` keeps what the query matches now, ``series`` (an
        import) keeps that list instead."""
        name, description = check_name(name), check_description(description)
        checked = check_query(query, self.limits)
        owner = self._owner(user, project)
        now, cohort_id = datetime.now(UTC), uuid.uuid4().hex
        row = Cohort(
            id=cohort_id,
            name=name,
            description=description,
            project=owner,
            query=checked,
            frozen_at=None,
            source_site=source_site[:512],
            created_by=user.username[:64],
            created_at=now,
            updated_at=now,
        )
        if freeze and series is None:
            series = [
                uid
                for page in matching_uids(
                    self.index, project_query(parse_query(checked, limits=self.limits), owner)
                )
                for uid in page
            ]
        try:
            with Session(self.engine) as session, session.begin():
                session.add(row)
                session.flush()
                if series is not None:
                    row.frozen_at = now
                    _write_frozen(session, cohort_id, series)
        except IntegrityError:
            raise Conflict(f"project {owner!r} already has a cohort named {name!r}") from None
        return self.get(user, cohort_id)

    def update(
        self,
        user: CurrentUser,
        cohort_id: str,
        *,
        name: str | None = None,
        description: str | None = None,
        query: object = None,
    ) -> CohortInfo:
        try:
            with Session(self.engine) as session, session.begin():
                row = self._writable(session, user, cohort_id)
                if name is not None:
                    row.name = check_name(name)
                if description is not None:
                    row.description = check_description(description)
                if query is not None:
                    if row.frozen_at is not None:
                        raise Conflict(
                            f"cohort {cohort_id} is frozen: unfreeze it before changing its query"
                        )
                    row.query = check_query(query, self.limits)
                row.updated_at = datetime.now(UTC)
                session.flush()
        except IntegrityError:
            raise Conflict(f"the project already has a cohort named {name!r}") from None
        return self.get(user, cohort_id)

    def remove(self, user: CurrentUser, cohort_id: str) -> None:
        with Session(self.engine) as session, session.begin():
            session.delete(self._writable(session, user, cohort_id))

    def freeze(self, user: CurrentUser, cohort_id: str) -> CohortInfo:
        """Keep the series the query matches now (again, if already frozen)."""
        with Session(self.engine) as session:
            writable = self._writable(session, user, cohort_id)
            query = _cohort_query(writable, self.limits)
        uids = [uid for page in matching_uids(self.index, query) for uid in page]
        with Session(self.engine) as session, session.begin():
            row = self._writable(session, user, cohort_id)
            row.frozen_at = row.updated_at = datetime.now(UTC)
            _write_frozen(session, row.id, uids)
        return self.get(user, cohort_id)

    def unfreeze(self, user: CurrentUser, cohort_id: str) -> CohortInfo:
        with Session(self.engine) as session, session.begin():
            row = self._writable(session, user, cohort_id)
            row.frozen_at, row.updated_at = None, datetime.now(UTC)
            session.execute(delete(CohortSeries).where(CohortSeries.cohort_id == row.id))
        return self.get(user, cohort_id)

    def import_document(
        self,
        user: CurrentUser,
        document: object,
        *,
        project: str | None = None,
        name: str | None = None,
    ) -> CohortInfo:
        """Save an exported cohort here; 400 naming the part of the document at fault."""
        parsed = parse_export(document, self.limits)
        return self.create(
            user,
            name=name if name is not None else parsed["name"],
            description=parsed["description"],
            query=parsed["query"],
            project=project,
            source_site=parsed["source_site"],
            series=parsed.get("series"),
        )

    # -- helpers ------------------------------------------------------------------------
    def _owner(self, user: CurrentUser, project: str | None) -> str:
        """The project a new cohort goes to: the one named, else the caller's only one.

        Site admins may act in every project, member or not (the first admin of a new
        site belongs to none), so their choice is every project of the site.
        """
        if project is None:
            with Session(self.engine) as session:
                mine = (
                    list(session.scalars(select(Project.name).order_by(Project.name)))
                    if user.is_admin
                    else sorted(user.projects)
                )
            if len(mine) != 1:
                raise Invalid(
                    "project: name the project that owns the cohort"
                    + (f" (one of {', '.join(mine)})" if mine else "")
                )
            project = mine[0]
        require_project_role(user, project, ProjectRole.RESEARCHER)
        with Session(self.engine) as session:
            if session.scalar(select(Project.id).where(Project.name == project)) is None:
                raise NotFound(f"no project {project!r}")
        return project

    def _writable(self, session: Session, user: CurrentUser, cohort_id: str) -> Cohort:
        row = _visible(session, user, cohort_id)
        require_project_role(user, row.project, ProjectRole.RESEARCHER)
        return row

    def _documents(
        self, uids: builtins.list[str], fields: builtins.list[str] | None, project: str
    ) -> builtins.list[dict[str, Any]]:
        """Index documents of ``uids`` in that order; a series gone from the index, or
        not in the cohort's project (an imported list may name any series), shows as its
        UID alone."""
        if not uids:
            return []
        found: SearchResult = self.index.search(
            project_query(Terms(FIELDS[ID_FIELD], tuple(uids)), project),
            limit=len(uids),
            fields=fields,
        )
        by_uid = {hit[ID_FIELD]: hit for hit in found.hits}
        return [by_uid.get(uid, {ID_FIELD: uid}) for uid in uids]


def _cohort_query(row: Cohort, limits: QueryLimits) -> Query:
    """The saved (already checked) query of ``row`` over the series of its project."""
    return project_query(parse_query(row.query, limits=limits), row.project)


def _visible(session: Session, user: CurrentUser, cohort_id: str) -> Cohort:
    row = session.get(Cohort, cohort_id)
    scope = project_scope(user)
    if row is None or (scope is not None and row.project not in scope):
        raise NotFound(f"no cohort {cohort_id!r}")
    return row


def _write_frozen(session: Session, cohort_id: str, uids: builtins.list[str]) -> None:
    session.execute(delete(CohortSeries).where(CohortSeries.cohort_id == cohort_id))
    unique = list(dict.fromkeys(uids))
    if unique:
        session.execute(
            insert(CohortSeries),
            [
                {"cohort_id": cohort_id, "position": i, "series_instance_uid": uid}
                for i, uid in enumerate(unique)
            ],
        )


def _frozen_uids(session: Session, cohort_id: str) -> builtins.list[str]:
    return list(
        session.scalars(
            select(CohortSeries.series_instance_uid)
            .where(CohortSeries.cohort_id == cohort_id)
            .order_by(CohortSeries.position)
        )
    )


def _frozen_counts(session: Session, cohort_ids: builtins.list[str]) -> dict[str, int]:
    if not cohort_ids:
        return {}
    rows = session.execute(
        select(CohortSeries.cohort_id, func.count())
        .where(CohortSeries.cohort_id.in_(cohort_ids))
        .group_by(CohortSeries.cohort_id)
    )
    counts = {cohort_id: int(n) for cohort_id, n in rows}
    return {cohort_id: counts.get(cohort_id, 0) for cohort_id in cohort_ids}


def _info(row: Cohort, frozen_series: int | None) -> CohortInfo:
    return CohortInfo(
        id=row.id,
        name=row.name,
        description=row.description,
        project=row.project,
        query=dict(row.query or {}),
        frozen_at=_utc(row.frozen_at) if row.frozen_at else None,
        frozen_series=frozen_series if row.frozen_at is not None else None,
        source_site=row.source_site,
        created_by=row.created_by,
        created_at=_utc(row.created_at),
        updated_at=_utc(row.updated_at),
    )


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
