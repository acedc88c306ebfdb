"""The indexer: drains the catalog's outbox into the metadata index.

One pass (:meth:`Indexer.run_once`):

1. Series the store deleted (tombstones, :mod:`jip.meta.schema`) are refreshed: removed
   from the index, or rebuilt if the series came back since.
2. Up to ``batch`` instances not yet indexed are taken from the catalog, oldest first,
   and their headers read from storage, never the pixel data.
3. Their summaries are stored in the catalog (the header of an instance is read once),
   each touched series document is rebuilt from all summaries of its series
   (:func:`jip.meta.extract.series_document`: deterministic, so a pass repeated after a
   crash writes the same documents) and upserted.
4. Only then are the instances marked indexed; a header that cannot be read is marked
   with its error instead (``GET /api/meta/errors``) and never stops the others.

A crash anywhere leaves the instances in the outbox and the pass is simply repeated.
:class:`MetaIndexer` runs passes in a thread as a component of `jip up`; the composition
(:func:`jip.embedded.meta_indexer`) hands it a builder of the adapters it opens on start
(:class:`IndexerAdapters`), so this module never picks an adapter itself.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, BinaryIO

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from sqlalchemy import Engine

from jip import metrics
from jip.config import Settings
from jip.errors import Invalid, NotFound
from jip.meta.extract import instance_summary, read_summary, series_document
from jip.meta.fields import ID_FIELD
from jip.meta.index import MetaIndex
from jip.meta.service import PROJECTS_FIELD, IndexLedger
from jip.store import BlobStorage, Catalog, SeriesProjects, StoredInstance

log = logging.getLogger(__name__)

_MAX_ERROR = 2000  # characters of an error message kept in the catalog


@dataclass(frozen=True)
class IndexerAdapters:
    """What an indexer thread opens on start and closes on stop."""

    engine: Engine  # the catalog database (outbox, summaries, tombstones)
    storage: BlobStorage  # where the headers are read from
    index: MetaIndex  # where the series documents go


@dataclass(frozen=True)
class IndexPass:
    """What one pass did."""

    instances: int = 0  # taken from the outbox
    failed: int = 0  # of those, headers that could not be read
    upserted: int = 0  # series documents written
    removed: int = 0  # series documents deleted


class Indexer:
    """Outbox → summaries → series documents → index, one batch per pass."""

    def __init__(
        self,
        *,
        catalog: Catalog,
        storage: BlobStorage,
        index: MetaIndex,
        batch_size: int = 500,
    ) -> None:
        self.catalog = catalog
        self.storage = storage
        self.index = index
        self.batch_size = batch_size
        self.ledger = IndexLedger(catalog.engine)

    def run_once(self) -> IndexPass:
        removed = self._apply_deletions()
        oldest = self.catalog.oldest_unindexed_at()
        lag = 0.0 if oldest is None else (datetime.now(UTC) - oldest).total_seconds()
        metrics.INDEX_LAG.set(max(0.0, lag))
        batch = self.catalog.unindexed(self.batch_size)
        if not batch:
            return IndexPass(removed=removed)
        summaries: dict[str, tuple[str, dict[str, Any]]] = {}
        errors: dict[str, str] = {}
        for instance in batch:
            try:
                summaries[instance.sop_instance_uid] = (
                    instance.series_instance_uid,
                    self.read_header(instance),
                )
            except (Invalid, NotFound) as exc:
                errors[instance.sop_instance_uid] = str(exc)[:_MAX_ERROR] or type(exc).__name__
                log.warning(
                    "header not indexed",
                    extra={"sop_instance_uid": instance.sop_instance_uid, "error": str(exc)},
                )
        stored = self.ledger.save_summaries(summaries, dropped=errors)
        upserted, deleted = self.refresh({i.series_instance_uid for i in batch})
        indexed = [uid for uid in summaries if uid in stored]
        if indexed:
            self.catalog.mark_indexed(indexed)
        for uid, error in errors.items():
            self.catalog.mark_indexed([uid], error=error)
        return IndexPass(len(batch), len(errors), upserted, removed + deleted)

    def drain(self, max_passes: int | None = None) -> IndexPass:
        """Run passes until the outbox and the tombstones are empty; totals of all."""
        total = IndexPass()
        passes = 0
        while max_passes is None or passes < max_passes:
            done = self.run_once()
            passes += 1
            total = IndexPass(
                total.instances + done.instances,
                total.failed + done.failed,
                total.upserted + done.upserted,
                total.removed + done.removed,
            )
            if done.instances == 0 and done.removed == 0:
                break
        return total

    def read_header(self, instance: StoredInstance) -> dict[str, Any]:
        """The summary of one stored instance, read up to its pixel data."""
        path = self.storage.local_path(instance.blob_key)
        if path is not None:
            if not path.exists():
                raise NotFound(f"the stored file of {instance.sop_instance_uid} is missing")
            return read_summary(path)
        with self.storage.open(instance.blob_key) as stream:  # seekable, reads on demand
            return instance_summary(_parse_header(stream), instance.size_bytes)

    def refresh(self, series_uids: Iterable[str]) -> tuple[int, int]:
        """Make the index agree with the stored summaries of ``series_uids``: rebuild the
        documents of series that have any, delete the others; (upserted, deleted)."""
        wanted = sorted(set(series_uids))
        if not wanted:
            return 0, 0
        docs = list(self._documents(self.ledger.summaries_of(wanted).items()))
        upserted = self.index.upsert(docs) if docs else 0
        built = {doc[ID_FIELD] for doc in docs}
        gone = [uid for uid in wanted if uid not in built]
        deleted = self.index.delete(gone) if gone else 0
        return upserted, deleted

    def rebuild_all(self, progress: Callable[[int], None] | None = None) -> int:
        """Replace the whole index with documents built from the stored summaries, in
        bulk where the index has a bulk path (SQLite: searches answer from the old
        contents until the swap); no header is read again. Series whose summaries were
        stored while it ran are refreshed afterwards, so nothing indexed meanwhile is
        lost at the swap. Returns how many documents the index holds."""
        started = datetime.now(UTC)
        docs = self._documents(self.ledger.summaries_by_series())
        bulk = getattr(self.index, "rebuild", None)
        if bulk is not None:
            bulk(docs, progress)
        else:  # an index without one (OpenSearch): clear, then upsert in batches
            self.index.clear()
            batch: list[dict[str, Any]] = []
            loaded = 0
            for doc in docs:
                batch.append(doc)
                if len(batch) >= self.batch_size:
                    loaded += self.index.upsert(batch)
                    batch = []
                    if progress is not None:
                        progress(loaded)
            loaded += self.index.upsert(batch) if batch else 0
            if progress is not None:
                progress(loaded)
        self.refresh(self.ledger.series_with_summaries(since=started))
        return self.index.count()

    def _documents(
        self, by_series: Iterable[tuple[str, list[dict[str, Any]]]], chunk: int = 2000
    ) -> Iterable[dict[str, Any]]:
        """Series documents with their projects, asked of the catalog ``chunk`` series
        at a time; a series whose document cannot be built is logged and left out."""
        pending: list[tuple[str, list[dict[str, Any]]]] = []

        def flush() -> Iterable[dict[str, Any]]:
            projects = SeriesProjects(self.catalog.engine).projects_of([uid for uid, _ in pending])
            for series_uid, summaries in pending:
                try:
                    doc = series_document(summaries)
                except Invalid as exc:  # e.g. summaries naming another series than the catalog
                    log.error(
                        "series document not built",
                        extra={"series_instance_uid": series_uid, "error": str(exc)},
                    )
                    continue
                doc[PROJECTS_FIELD] = sorted(projects[series_uid])
                yield doc

        for item in by_series:
            pending.append(item)
            if len(pending) >= chunk:
                yield from flush()
                pending = []
        if pending:
            yield from flush()

    def _apply_deletions(self) -> int:
        tombstones = self.ledger.deleted_series(self.batch_size)
        if not tombstones:
            return 0
        _, deleted = self.refresh(uid for _, uid in tombstones)
        self.ledger.forget_deleted([pk for pk, _ in tombstones])
        return deleted


def _parse_header(stream: BinaryIO) -> Dataset:
    try:
        try:
            return pydicom.dcmread(stream, stop_before_pixels=True)
        except InvalidDicomError:
            stream.seek(0)  # a bare dataset without preamble and file meta
            return pydicom.dcmread(stream, stop_before_pixels=True, force=True)
    except Exception as exc:
        raise Invalid(f"cannot parse DICOM header: {exc}") from exc


class MetaIndexer:
    """The indexer as a component of `jip up`: a thread that runs passes until stopped.

    A pass that fails (index or catalog unreachable) is logged and retried after a pause;
    the outbox keeps everything until then.
    """

    name = "meta"

    def __init__(self, settings: Settings, open_adapters: Callable[[], IndexerAdapters]) -> None:
        """``open_adapters`` builds the adapters of ``settings`` (the composition's
        choice) when the component starts; :meth:`stop` closes them."""
        self.settings = settings
        self.open_adapters = open_adapters
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._engine: Engine | None = None
        self._index: MetaIndex | None = None
        self._last_error: str | None = None

    def start(self) -> None:
        adapters = self.open_adapters()
        self._engine, self._index = adapters.engine, adapters.index
        indexer = Indexer(
            catalog=Catalog(adapters.engine),
            storage=adapters.storage,
            index=adapters.index,
            batch_size=self.settings.meta.index_batch_size,
        )
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._loop, args=(indexer,), name="jip-meta-indexer", daemon=True
        )
        self._thread.start()
        log.info("metadata indexer started", extra={"index": self._index_location()})

    def not_ready(self) -> str | None:
        if self._thread is None:
            return "metadata indexer: not started"
        if not self._thread.is_alive():
            return "metadata indexer: thread exited"
        return None

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None
        if self._index is not None:
            self._index.close()
            self._index = None
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def describe(self) -> dict[str, object]:
        return {
            "index": self._index_location(),
            "interval_s": self.settings.meta.index_interval_s,
            "last_error": self._last_error,
        }

    def _index_location(self) -> str:
        """The index URL without credentials (it goes to the state file and the logs)."""
        from urllib.parse import urlsplit, urlunsplit

        url = self.settings.resolved_index_url
        parts = urlsplit(url)
        if parts.username is None and parts.password is None:
            return url
        netloc = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))

    def _loop(self, indexer: Indexer) -> None:
        interval = self.settings.meta.index_interval_s
        pause = interval
        while not self._stop.is_set():
            try:
                done = indexer.run_once()
            except Exception as exc:
                self._last_error = f"{type(exc).__name__}: {exc}"
                log.exception("indexing pass failed; retrying", extra={"retry_s": pause})
                self._stop.wait(pause)
                pause = min(pause * 2, 30.0)
                continue
            self._last_error, pause = None, interval
            if done.instances < indexer.batch_size:  # caught up; a full batch goes on at once
                self._stop.wait(interval)
