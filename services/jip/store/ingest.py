"""bytes → storage → catalog: the one path every received instance takes.

The bytes are stored exactly as received (no re-encoding, no pixel decoding). The blob
key carries a digest of the content, so a different instance with a known SOP Instance
UID never overwrites the first one's bytes; the catalog decides which one counts
(see ``DESIGN.md``, "Facts about DICOM ingest"). Only when both the blob and the
catalog row are durable does the caller acknowledge.

Group commit, in two steps: instances that concurrent associations deliver at the
same moment share their blobs' flush (:class:`SharedFlush`: one fsync per folder, all
or nothing; each file's own fsync runs before, on its receiving thread, sparing a
hand-off to another thread) and then one catalog transaction (:class:`GroupCommitter`).
With several senders each step's leader serves everyone who arrived meanwhile, and a
batch's flush overlaps the previous batch's commit, instead of every instance asking
the disk for flushes of its own.
"""

from __future__ import annotations

import hashlib
import logging
import mmap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jip import metrics
from jip.store.catalog.add import CatalogWriter
from jip.store.catalog.catalog import AddOutcome, AddResult, Catalog, DuplicatePolicy, NewInstance
from jip.store.catalog.group_commit import GroupCommitter, SharedFlush
from jip.store.dicom_file import InstanceHeader, header_of, open_part10, read_header_bytes
from jip.store.storage.port import BlobStorage, StagedBlob

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestResult:
    sop_instance_uid: str
    sop_class_uid: str
    series_instance_uid: str
    study_instance_uid: str
    outcome: AddOutcome
    blob_key: str


def blob_key(header: InstanceHeader, sha256: str) -> str:
    """``<study>/<series>/<sop>.<digest>.dcm``: UIDs are validated, so keys are safe."""
    return (
        f"{header.study_instance_uid}/{header.series_instance_uid}/"
        f"{header.sop_instance_uid}.{sha256[:16]}.dcm"
    )


_CHUNK = 1024 * 1024  # a multiple of the page size, as madvise wants


def _sha256_of(data: Any) -> str:
    """The digest of the bytes (or mmap) that were parsed: the file is read once.

    A mapped file is hashed a chunk at a time and each chunk's pages dropped from this
    process afterwards, so memory stays flat for a 500 MB instance.
    """
    if not isinstance(data, mmap.mmap):
        return hashlib.sha256(data).hexdigest()
    digest = hashlib.sha256()
    with memoryview(data) as view:
        for at in range(0, len(view), _CHUNK):
            digest.update(view[at : at + _CHUNK])
            data.madvise(mmap.MADV_DONTNEED, at, min(_CHUNK, len(view) - at))
    return digest.hexdigest()


class Ingestor:
    """Stores and catalogues instances; shared by DIMSE, STOW-RS and file import."""

    def __init__(
        self,
        storage: BlobStorage,
        catalog: Catalog,
        policy: DuplicatePolicy = DuplicatePolicy.KEEP_FIRST,
    ) -> None:
        self.storage = storage
        self.catalog = catalog
        self.policy = policy
        self._writer = CatalogWriter(catalog.engine, policy, catalog.default_project)
        self._committer: GroupCommitter[NewInstance, AddResult] = GroupCommitter(
            self._writer.add, gate=self._writer.exclusive
        )
        self._flusher: SharedFlush[StagedBlob, None] = SharedFlush(self._flush)

    def ingest_file(
        self,
        path: Path,
        calling_ae_title: str = "",
        *,
        project: str | None = None,
        header: InstanceHeader | None = None,
    ) -> IngestResult:
        """Ingest the Part 10 file at ``path``, which this call consumes (moves or deletes).

        A new series goes to ``project`` if given, else to the projects the catalog's
        assignment rules choose (:mod:`jip.store.catalog.projects`). ``header`` is the
        file's header when the caller already checked it (:func:`read_header`), so the
        C-STORE path reads each header once.

        Raises :class:`jip.errors.Invalid` for unparseable or truncated input, leaving
        everything already stored untouched.
        """
        moved = False
        try:
            with open_part10(path) as data:
                header = header or header_of(data, path)
                size_bytes, sha256 = len(data), _sha256_of(data)
            key = blob_key(header, sha256)
            # The key names the content: storing identical bytes again under it is
            # harmless, and cheaper than asking first whether they are there.
            staged = self.storage.stage(key, path)
            moved = True
        finally:
            if not moved:
                path.unlink(missing_ok=True)
        # Durable before the row is written; a failed flush withdraws the blob. The
        # file's bytes are flushed here, on this thread; the folders' flushes (the new
        # names) are shared with whoever arrived meanwhile.
        self._flusher.submit(self.storage.flush_bytes(staged))
        return self._record(NewInstance(header, size_bytes, sha256, key, calling_ae_title, project))

    def ingest_bytes(
        self,
        data: bytes,
        calling_ae_title: str = "",
        *,
        project: str | None = None,
        header: InstanceHeader | None = None,
    ) -> IngestResult:
        """Ingest a Part 10 file held in memory (a STOW-RS part, a data set the DIMSE
        fast path collected): written once, where it stays (no spool file, not read
        back), its folder's flush shared as :meth:`ingest_file` shares it.

        ``header`` and errors as for :meth:`ingest_file`.
        """
        header = header or read_header_bytes(data)
        sha256 = hashlib.sha256(data).hexdigest()
        key = blob_key(header, sha256)
        self._flusher.submit(self.storage.stage_bytes(key, data))
        return self._record(NewInstance(header, len(data), sha256, key, calling_ae_title, project))

    def _record(self, item: NewInstance) -> IngestResult:
        header = item.header
        result = self._committer.submit(item)
        if result.outcome is not AddOutcome.DUPLICATE:
            via = "dimse" if item.calling_ae_title else "http"
            metrics.STORED_BYTES.labels(via).inc(item.size_bytes)
        if result.outcome in (AddOutcome.CONFLICT, AddOutcome.OVERWRITTEN):
            log.warning(
                "instance conflict",
                extra={"sop_instance_uid": header.sop_instance_uid, "resolution": result.outcome},
            )
        return IngestResult(
            sop_instance_uid=header.sop_instance_uid,
            sop_class_uid=header.sop_class_uid,
            series_instance_uid=header.series_instance_uid,
            study_instance_uid=header.study_instance_uid,
            outcome=result.outcome,
            blob_key=item.blob_key,
        )

    def _flush(self, staged: Sequence[StagedBlob]) -> list[None]:
        self.storage.flush(staged)
        return [None] * len(staged)

    def close(self) -> None:
        self._flusher.close()
        self._committer.close()
        self._writer.close()
