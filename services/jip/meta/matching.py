"""Does a series match a cohort query? Answered by meta's own query engine, never a copy.

FLOW's auto-rules ask it through :class:`SeriesMatcher` (``from jip.meta import
SeriesMatcher``). The query is parsed once by :mod:`jip.meta.query` and evaluated by a
:class:`MetaIndex`: the
site's index when it already holds the series' document, else a private in-memory
:class:`SqliteIndex` filled with documents built by :mod:`jip.meta.extract` from the
series' stored headers. One cohort language, one evaluator, whichever index answers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from jip.errors import Invalid
from jip.meta.extract import read_summary, read_summary_bytes, series_document
from jip.meta.fields import FIELDS, ID_FIELD
from jip.meta.index import MetaIndex
from jip.meta.index_sqlite import SqliteIndex
from jip.meta.query import Bool, Query, Terms, parse_query
from jip.store import BlobStorage, Catalog

log = logging.getLogger(__name__)

_PAGE = 10000


def check_query(query: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate a cohort query (Invalid names the path at fault); return it as given."""
    parse_query(dict(query or {}))
    return dict(query or {})


class SeriesMatcher:
    """Answers "which of these series match this query" for the rule evaluator."""

    def __init__(
        self, *, catalog: Catalog, storage: BlobStorage, index: MetaIndex | None = None
    ) -> None:
        self.catalog = catalog
        self.storage = storage
        self.index = index

    def matching(self, query: Mapping[str, Any], series_uids: Sequence[str]) -> set[str]:
        """The subset of ``series_uids`` whose documents ``query`` matches."""
        uids = list(dict.fromkeys(series_uids))
        if not uids:
            return set()
        parsed = parse_query(dict(query or {}))
        indexed = self._indexed(uids)
        found = self._search(self.index, parsed, indexed) if self.index and indexed else set()
        rest = [uid for uid in uids if uid not in indexed]
        if rest:
            scratch = SqliteIndex(":memory:")
            try:
                scratch.upsert(self._documents(rest))
                found |= self._search(scratch, parsed, rest)
            finally:
                scratch.close()
        return found

    def _indexed(self, uids: list[str]) -> list[str]:
        """The series whose every instance the site's index already holds."""
        if self.index is None:
            return []
        hits = self.index.search(_series(uids), limit=min(len(uids), _PAGE), fields=[ID_FIELD]).hits
        present = {str(h[ID_FIELD]) for h in hits}
        # The catalog is the indexer's outbox: an instance not indexed yet means the
        # series' document may still miss it.
        pending = self.catalog.series_pending_index(sorted(present))
        return [uid for uid in uids if uid in present and uid not in pending]

    @staticmethod
    def _search(index: MetaIndex, query: Query, uids: list[str]) -> set[str]:
        combined = Bool(filter=(query, _series(uids)))
        result = index.search(combined, limit=min(len(uids), _PAGE), fields=[ID_FIELD])
        return {str(h[ID_FIELD]) for h in result.hits}

    def _documents(self, uids: Iterable[str]) -> list[dict[str, Any]]:
        docs = []
        for uid in uids:
            try:
                docs.append(series_document(self._summaries(uid)))
            except Invalid as exc:  # unreadable headers: the series matches nothing
                log.warning(
                    "series not matchable", extra={"series_instance_uid": uid, "error": str(exc)}
                )
        return docs

    def _summaries(self, uid: str) -> list[dict[str, Any]]:
        summaries = []
        for instance in self.catalog.instances_of_series(uid):
            path = self.storage.local_path(instance.blob_key)
            if path is not None:
                summaries.append(read_summary(path))
            else:
                summaries.append(read_summary_bytes(self.storage.read_bytes(instance.blob_key)))
        return summaries


def _series(uids: list[str]) -> Query:
    """The query for exactly the series ``uids`` (built here, so no query limit applies)."""
    return Terms(FIELDS[ID_FIELD], tuple(uids))
