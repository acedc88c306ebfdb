"""META: header extraction, the cohort query language, the metadata index and cohorts;
this module is its public interface.

What the room holds:

- ``extract``: DICOM headers (never pixels) to instance summaries and series documents;
  ``fields``: the field catalogue, what a series document holds.
- ``query`` (queries) and ``aggs`` (aggregations, sort): the cohort language, a checked
  subset of OpenSearch's DSL, parsed once at the edge into typed trees, within the
  bounds of ``limits`` (:class:`QueryLimits`, the ``meta`` settings).
- ``index``: the port (:class:`MetaIndex`, which takes parsed trees) and the answer
  shapes; one module per engine: ``index_sqlite`` (embedded shape: its tables and writes)
  with ``index_sqlite_query`` (its query compiler, trees to SQL), ``index_opensearch``
  (cluster shape). A new index backend is one more ``index_<engine>.py`` that passes
  ``tests/meta/test_index_conformance.py``, chosen by ``jip.backends.index_for``.
- ``indexer``: drains the catalog's outbox into the index (:class:`Indexer`), and the
  `jip up` component that runs it in a thread (:class:`MetaIndexer`, given its adapters
  by the composition); ``service``: META's side of the catalog (:class:`IndexLedger`:
  summaries, tombstones, outbox progress) and the searches the API and cohorts share.
- ``cohorts`` (saved, frozen and imported cohorts) with ``cohort_export`` (the JSON
  document sites exchange); ``matching``: :class:`SeriesMatcher`, whether series match
  a query, for FLOW's auto-rules.
- ``schema``: META's tables in the catalog database; ``routes`` (``/api/meta``),
  ``cohort_routes`` (``/api/meta/cohorts``) and ``deps`` (adapters read from
  ``request.app.state.runtime`` through the :class:`~jip.meta.deps.MetaAdapters`
  Protocol): the HTTP side, mounted by ``jip.app``.

What it may import: the core (``jip.config``, ``jip.db``, ``jip.errors``, ``jip.logs``,
``jip.api_types``) and the public names of STORE and BASE (``from jip.store import ...``,
``from jip.base import ...``); never FLOW, the UI or the composition (``jip.runtime``,
``jip.backends``). Other services and the UI use META only through the names below; the
composition (runtime, backends, migrations, app, embedded, cli) may reach its modules.
META's own modules import each other directly, never through this package.
"""

from __future__ import annotations

from jip.meta.aggs import Agg, SortKey, parse_aggs, parse_sort
from jip.meta.cohorts import CohortInfo, Cohorts, CohortSeriesPage
from jip.meta.fields import FIELDS, ID_FIELD
from jip.meta.index import MetaIndex, SearchResult
from jip.meta.indexer import Indexer, IndexerAdapters, IndexPass, MetaIndexer
from jip.meta.limits import QueryLimits
from jip.meta.matching import SeriesMatcher, check_query
from jip.meta.query import MATCH_ALL, Query, parse_query
from jip.meta.service import IndexLedger, IndexProgress, cohort_values, sweep_orphans

__all__ = [
    "FIELDS",
    "ID_FIELD",
    "MATCH_ALL",
    "Agg",
    "CohortInfo",
    "CohortSeriesPage",
    "Cohorts",
    "IndexLedger",
    "IndexPass",
    "IndexProgress",
    "Indexer",
    "IndexerAdapters",
    "MetaIndex",
    "MetaIndexer",
    "Query",
    "QueryLimits",
    "SearchResult",
    "SeriesMatcher",
    "SortKey",
    "check_query",
    "cohort_values",
    "parse_aggs",
    "parse_query",
    "parse_sort",
    "sweep_orphans",
]
