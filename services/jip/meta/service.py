"""What META keeps beside the index, and the searches the API and cohorts share.

:class:`IndexLedger` holds the catalog side of indexing: the instance summaries, the
tombstones of deleted series, the instances whose header failed, how far the outbox is,
and the re-queueing of everything for a reindex. The outbox itself
(``instances.indexed_at`` / ``index_error``) belongs to the store's catalog: this module
reads and re-queues it through :class:`jip.store.Catalog`'s outbox methods, never its
tables.
"""

from __future__ import annotations

import json
import operator
from collections import defaultdict
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, delete, insert, select

from jip.meta.aggs import Agg, CardinalityAgg, SortKey, TermsAgg, parse_aggs
from jip.meta.fields import FIELDS, ID_FIELD, KEYWORD_SUFFIX, FieldType, lookup
from jip.meta.index import MetaIndex
from jip.meta.index_sqlite_query import wildcard_regex
from jip.meta.query import (
    MATCH_ALL,
    Bool,
    Exists,
    Match,
    MatchAll,
    Prefix,
    Query,
    Range,
    Term,
    Terms,
    Wildcard,
    parse_query,
)
from jip.meta.schema import DeletedSeries, InstanceSummary
from jip.store import Catalog, existing_instances

PROJECTS_FIELD = "Projects"
NO_PROJECT = "-"  # no project is named so: an empty scope matches no series

PAGE = 1000  # series UIDs per keyset page when walking a whole result
BY_UID = (SortKey(FIELDS[ID_FIELD]),)  # what parse_sort(["SeriesInstanceUID"]) reads


@dataclass(frozen=True)
class IndexFailure:
    """An instance whose header could not be indexed, and why."""

    sop_instance_uid: str
    series_instance_uid: str
    error: str
    received_at: datetime


@dataclass(frozen=True)
class IndexProgress:
    pending: int  # waiting in the outbox
    failed: int  # header could not be read or parsed
    documents: int  # series documents in the index


class IndexLedger:
    """The catalog tables of META (:mod:`jip.meta.schema`) over the catalog engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.catalog = Catalog(engine)

    # -- instance summaries -------------------------------------------------------------
    def save_summaries(
        self, summaries: Mapping[str, tuple[str, Mapping[str, Any]]], dropped: Iterable[str] = ()
    ) -> set[str]:
        """Store ``{sop_uid: (series_uid, summary)}`` and forget the summaries of ``dropped``
        (instances whose header failed this time); returns the SOP UIDs stored. Instances
        the store deleted meanwhile are skipped (their summary would outlive them)."""
        uids = [*summaries, *dropped]
        if not uids:
            return set()
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            # Write first, so that SQLite takes the write lock before reading.
            conn.execute(delete(InstanceSummary).where(InstanceSummary.sop_instance_uid.in_(uids)))
            present = existing_instances(conn, list(summaries))
            rows = [
                {
                    "sop_instance_uid": uid,
                    "series_instance_uid": series_uid,
                    "summary": json.dumps(summary, sort_keys=True, separators=(",", ":")),
                    "extracted_at": now,
                }
                for uid, (series_uid, summary) in summaries.items()
                if uid in present
            ]
            if rows:
                conn.execute(insert(InstanceSummary), rows)
        return present

    def summaries_of(self, series_uids: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
        """The stored summaries of each series (series without any are left out)."""
        found: dict[str, list[dict[str, Any]]] = defaultdict(list)
        wanted = list(series_uids)
        with self.engine.connect() as conn:
            for start in range(0, len(wanted), PAGE):
                rows = conn.execute(
                    select(InstanceSummary.series_instance_uid, InstanceSummary.summary).where(
                        InstanceSummary.series_instance_uid.in_(wanted[start : start + PAGE])
                    )
                )
                for series_uid, text in rows:
                    found[series_uid].append(json.loads(text))
        return dict(found)

    def summaries_by_series(self) -> Iterator[tuple[str, list[dict[str, Any]]]]:
        """Every stored summary, one series at a time in SeriesInstanceUID order, streamed
        (a whole archive's summaries never sit in memory at once)."""
        query = select(InstanceSummary.series_instance_uid, InstanceSummary.summary).order_by(
            InstanceSummary.series_instance_uid
        )
        current: str | None = None
        found: list[dict[str, Any]] = []
        with self.engine.connect() as conn:
            for series_uid, text in conn.execution_options(yield_per=PAGE).execute(query):
                if series_uid != current:
                    if current is not None:
                        yield current, found
                    current, found = series_uid, []
                found.append(json.loads(text))
        if current is not None:
            yield current, found

    def series_with_summaries(self, *, since: datetime | None = None) -> list[str]:
        """Series with a stored summary (extracted at or after ``since``, if given)."""
        query = select(InstanceSummary.series_instance_uid).distinct()
        if since is not None:
            query = query.where(InstanceSummary.extracted_at >= since)
        with self.engine.connect() as conn:
            return list(conn.scalars(query))

    # -- deletions ----------------------------------------------------------------------
    def deleted_series(self, limit: int) -> list[tuple[int, str]]:
        """Tombstones of deleted series, oldest first: (pk, SeriesInstanceUID)."""
        query = select(DeletedSeries.pk, DeletedSeries.series_instance_uid).order_by(
            DeletedSeries.pk
        )
        with self.engine.connect() as conn:
            return [(pk, uid) for pk, uid in conn.execute(query.limit(limit))]

    def forget_deleted(self, pks: Sequence[int]) -> None:
        if pks:
            with self.engine.begin() as conn:
                conn.execute(delete(DeletedSeries).where(DeletedSeries.pk.in_(list(pks))))

    def existing_series(self, series_uids: Sequence[str]) -> set[str]:
        """Which of ``series_uids`` the catalog holds."""
        return self.catalog.existing_series(series_uids)

    # -- the outbox, read ---------------------------------------------------------------
    def failures(
        self, offset: int = 0, limit: int = 100, scope: Collection[str] | None = None
    ) -> tuple[int, list[IndexFailure]]:
        """Instances whose header failed, newest first, and how many there are (of the
        series of the projects in ``scope``)."""
        total, rows = self.catalog.scoped(scope).index_failures(offset, limit)
        return total, [
            IndexFailure(uid, series, error, _utc(at)) for uid, series, error, at in rows
        ]

    def progress(self, index: MetaIndex, scope: Collection[str] | None = None) -> IndexProgress:
        """How far indexing is over the series of the projects in ``scope`` (None: all)."""
        pending, errors = self.catalog.scoped(scope).outbox_counts()
        documents = (
            index.count()
            if scope is None
            else index.search(scoped_query(MATCH_ALL, scope), limit=0).total
        )
        return IndexProgress(pending=pending, failed=errors, documents=documents)

    def requeue(self) -> int:
        """Put every instance back into the outbox (errors included); returns how many.

        The running indexer then reads every header again and replaces each series
        document in place: search keeps answering from the old documents meanwhile.
        """
        return self.catalog.requeue_all()


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# --- searches shared by the API, cohorts and the reindex ------------------------------


def matching_uids(index: MetaIndex, query: Query, page: int = PAGE) -> Iterator[list[str]]:
    """Every SeriesInstanceUID ``query`` matches, in UID order, a page at a time.

    Pages by keyset (``SeriesInstanceUID > last``) rather than offset, so a result of any
    size is walked without hitting the index's result window.
    """
    last: str | None = None
    while True:
        paged = query
        if last is not None:
            paged = Bool(filter=(query, Range(FIELDS[ID_FIELD], gt=last)))
        result = index.search(paged, sort=BY_UID, limit=page, fields=[ID_FIELD])
        uids = [str(hit[ID_FIELD]) for hit in result.hits]
        if uids:
            yield uids
        if len(uids) < page:
            return
        last = uids[-1]


def cohort_values(
    index: MetaIndex, query: Mapping[str, Any], project: str, fields: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """The series of ``project`` a cohort ``query`` (an exported cohort's, checked here:
    Invalid names the clause at fault) matches, each with its values of ``fields`` (a
    field the series lacks is left out). FEDERATION's site agent resolves a job's cohort
    with it; keyset pages, so a cohort of any size is read whole."""
    for name in fields:
        lookup(name, "field")
    scoped = project_query(parse_query(dict(query), "cohort.query"), project)
    wanted = list(dict.fromkeys([ID_FIELD, *fields]))
    found: dict[str, dict[str, Any]] = {}
    last: str | None = None
    while True:
        paged = scoped if last is None else Bool(filter=(scoped, Range(FIELDS[ID_FIELD], gt=last)))
        hits = index.search(paged, sort=BY_UID, limit=PAGE, fields=wanted).hits
        for hit in hits:
            found[str(hit[ID_FIELD])] = {f: hit[f] for f in fields if hit.get(f) is not None}
        if len(hits) < PAGE:
            return found
        last = str(hits[-1][ID_FIELD])


def sweep_orphans(index: MetaIndex, ledger: IndexLedger) -> int:
    """Remove documents of series the catalog no longer holds; returns how many."""
    removed = 0
    for uids in matching_uids(index, MATCH_ALL):
        gone = sorted(set(uids) - ledger.existing_series(uids))
        if gone:
            removed += index.delete(gone)
    return removed


def field_catalogue() -> list[dict[str, Any]]:
    """Every field a query may name, with what it supports."""
    entries = []
    for field in FIELDS.values():
        entry: dict[str, Any] = {
            "name": field.name,
            "type": field.type.value,
            "level": field.level.value,
            "multi": field.multi,
            "sortable": not field.multi,
        }
        if field.type is FieldType.TEXT:
            entry["keyword"] = field.name + KEYWORD_SUFFIX  # for term, wildcard and facets
        entries.append(entry)
    return entries


def field_values(
    index: MetaIndex, name: str, size: int, scope: Collection[str] | None = None
) -> list[dict[str, Any]]:
    """The most frequent values of field ``name`` (a text field's exact values) over the
    series of ``scope`` (None: all series)."""
    field = lookup(name, "field")
    exact = field.name + KEYWORD_SUFFIX if field.type is FieldType.TEXT else field.name
    if scope is None:
        return index.field_values(exact, size)
    found = index.aggregate(
        scoped_query(MATCH_ALL, scope),
        scoped_aggs(parse_aggs({"values": {"terms": {"field": exact, "size": size}}}), scope),
    )
    return list(found["values"]["buckets"])


def project_query(query: Query, project: str) -> Query:
    """A saved cohort's (parsed) query over the series of its project, in which the
    ``Projects`` field holds that project alone (see :func:`scoped_query`)."""
    return scoped_query(query, (project,))


def scoped_query(query: Query, scope: Collection[str] | None) -> Query:
    """``query`` limited to the series of the projects in ``scope`` (None: no limit).

    The indexer writes each series' projects into its ``Projects`` field, so the limit
    is one ``terms`` filter, which both index adapters run natively. Clauses of ``query``
    on ``Projects`` see only the projects of ``scope`` (the other projects a series
    belongs to are not the caller's to know, not even by asking whether it is in one).
    The caller parses its query first (at the edge), so its errors name its own clauses.
    """
    if scope is None:
        return query
    seen = frozenset(scope)
    only = Terms(FIELDS[PROJECTS_FIELD], tuple(sorted(seen)) or (NO_PROJECT,))
    must = () if isinstance(query, MatchAll) else (_seen_projects(query, seen),)
    return Bool(must=must, filter=(only,))


def scoped_hits(hits: list[dict[str, Any]], scope: Collection[str] | None) -> list[dict[str, Any]]:
    """Search hits whose ``Projects`` name only the projects in ``scope`` (None: all)."""
    if scope is None:
        return hits
    return [
        hit | {PROJECTS_FIELD: [p for p in hit[PROJECTS_FIELD] if p in scope]}
        if isinstance(hit.get(PROJECTS_FIELD), list)
        else hit
        for hit in hits
    ]


def scoped_aggs(aggs: Mapping[str, Agg], scope: Collection[str] | None) -> dict[str, Agg]:
    """Aggregations in which ``Projects`` counts only the projects in ``scope``."""
    if scope is None:
        return dict(aggs)
    include = tuple(sorted(scope)) or (NO_PROJECT,)
    return {
        name: replace(agg, include=include)
        if isinstance(agg, TermsAgg | CardinalityAgg) and agg.field.stored == PROJECTS_FIELD
        else agg
        for name, agg in aggs.items()
    }


def _seen_projects(query: Query, scope: frozenset[str]) -> Query:
    """``query`` with each clause on ``Projects`` answered over the projects of ``scope``
    alone: the values it could match, as one ``terms`` clause."""
    if isinstance(query, Bool):
        return Bool(
            must=tuple(_seen_projects(q, scope) for q in query.must),
            filter=tuple(_seen_projects(q, scope) for q in query.filter),
            should=tuple(_seen_projects(q, scope) for q in query.should),
            must_not=tuple(_seen_projects(q, scope) for q in query.must_not),
            minimum_should_match=query.minimum_should_match,
        )
    field = getattr(query, "field", None)
    if field is None or field.stored != PROJECTS_FIELD or isinstance(query, Exists | Match):
        return query
    found = tuple(p for p in sorted(scope) if _matches(query, p))
    return Terms(field, found or (NO_PROJECT,))


def _matches(query: Query, project: str) -> bool:
    """Whether a leaf clause on ``Projects`` matches a series in ``project``."""
    match query:
        case Term(_, value):
            return project == value
        case Terms(_, values):
            return project in values
        case Range():
            return _in_range(query, project)
        case Wildcard(_, pattern):
            return wildcard_regex(pattern).fullmatch(project) is not None
        case Prefix(_, prefix):
            return project.startswith(prefix)
    raise TypeError(f"not a clause on a keyword field: {query!r}")  # pragma: no cover


def _in_range(query: Range, value: str) -> bool:
    checks = (
        (query.gt, operator.gt),
        (query.gte, operator.ge),
        (query.lt, operator.lt),
        (query.lte, operator.le),
    )
    return all(bound is None or test(value, bound) for bound, test in checks)
