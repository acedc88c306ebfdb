"""STORE: DICOM in and out, blob storage and the catalog; this module is its public interface.

What the room holds:

- ``ingest.py`` at the centre: every received instance (C-STORE, STOW-RS, workflow
  results) takes the one path that writes its bytes as received to storage and records
  it in the catalog, acknowledged only once both are durable; ``dicom_file.py`` and
  ``dicom_header.py`` read the header without decoding pixels.
- ``dimse/``: the listener processes, the C-STORE fast path, the pynetdicom handlers
  (C-ECHO, C-STORE, C-FIND, C-MOVE, C-GET as SCP), our SCU towards the PACS, the peers.
- ``dicomweb/``: QIDO-RS, WADO-RS (metadata, rendered, thumbnails), STOW-RS (PS3.18),
  named after its resources, and the multipart bodies they speak.
- ``catalog/``: the tables of patients, studies, series and instances, the write path,
  attribute matching, which projects a series belongs to, deletion; the catalog is also
  META's outbox (instances not yet indexed).
- ``storage/``: the blob storage port and its adapters (``file://``, ``s3://``).
- ``upload.py`` (files, folders and zips in through the ingest path, one result per
  file) and the zips out: ``zip_stream.py`` (the streamed zip), ``archive.py`` and
  ``archive_nifti.py`` (series as stored DICOM or NIfTI), ``download.py`` (the scoped,
  audited HTTP answer META's cohort and FLOW's run downloads give).
- ``forward_send.py``, ``forward_routes.py``: sending series to a peer (C-STORE or
  STOW-RS), ``POST /api/dicom/send``; ``dimse/study_query.py``, ``retrievals.py``,
  ``saved_queries.py``, ``pacs_routes.py``: the PACS page's query and retrieve, and the
  saved queries `jip up` runs nightly.
- ``adapters.py``, ``deps.py``: what store reads of the adapters the composition built
  (a Protocol that ``jip.runtime.Runtime`` satisfies; store never imports the runtime).
- ``routes.py``, ``upload_routes.py``, ``projects_routes.py``, ``dimse/scu_routes.py``,
  ``dicomweb/routes.py``: the HTTP routes, mounted by ``jip.app``.

What it may import: the core (``jip.config``, ``jip.db``, ``jip.errors``, ``jip.logs``,
``jip.api_types``) and BASE's public names (``from jip.base import ...``); never meta,
flow, the UI or the composition (``jip.runtime``, ``jip.backends``).

Other services use store only through the names below: a catalog query method rather
than a table. Each name's module is imported on first use (:func:`jip.lazy_exports`), so
that a process importing one part of store (`jip up` before it starts the listener, a
listener process) does not import the rest. Using a catalog name (``Catalog``,
``visible_series``, ``Ingestor``, ...) registers the catalog's tables on the shared
metadata, which the foreign keys of META's own tables rely on (:mod:`jip.meta.schema`);
the tables themselves are not exported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from jip import lazy_exports

if TYPE_CHECKING:
    from jip.store.catalog.catalog import (
        Catalog,
        FailedInstance,
        StoredInstance,
        existing_instances,
    )
    from jip.store.catalog.projects import RULE_FIELDS, SeriesProjects, visible_series
    from jip.store.deps import IngestorDep
    from jip.store.dicom_file import check_uid
    from jip.store.dicomweb.multipart import (
        Part,
        boundary_of,
        file_chunks,
        new_boundary,
        read_parts,
        write_parts,
    )
    from jip.store.download import (
        ArchiveFormatQuery,
        DownloadAudit,
        DownloadRequest,
        FileEntry,
        SpoolDirDep,
        zip_response,
    )
    from jip.store.ingest import Ingestor
    from jip.store.storage.port import BlobStorage, check_key
    from jip.store.zip_stream import ArchiveFormat

_EXPORTS = {
    "jip.store.catalog.catalog": (
        "Catalog",
        "FailedInstance",
        "StoredInstance",
        "existing_instances",
    ),
    "jip.store.catalog.projects": ("RULE_FIELDS", "SeriesProjects", "visible_series"),
    "jip.store.deps": ("IngestorDep",),
    "jip.store.dicom_file": ("check_uid",),
    "jip.store.dicomweb.multipart": (
        "Part",
        "boundary_of",
        "file_chunks",
        "new_boundary",
        "read_parts",
        "write_parts",
    ),
    "jip.store.download": (
        "ArchiveFormatQuery",
        "DownloadAudit",
        "DownloadRequest",
        "FileEntry",
        "SpoolDirDep",
        "zip_response",
    ),
    "jip.store.ingest": ("Ingestor",),
    "jip.store.storage.port": ("BlobStorage", "check_key"),
    "jip.store.zip_stream": ("ArchiveFormat",),
}

if not TYPE_CHECKING:  # the type checker reads the imports above
    __getattr__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "RULE_FIELDS",
    "ArchiveFormat",
    "ArchiveFormatQuery",
    "BlobStorage",
    "Catalog",
    "DownloadAudit",
    "DownloadRequest",
    "FailedInstance",
    "FileEntry",
    "Ingestor",
    "IngestorDep",
    "Part",
    "SeriesProjects",
    "SpoolDirDep",
    "StoredInstance",
    "boundary_of",
    "check_key",
    "check_uid",
    "existing_instances",
    "file_chunks",
    "new_boundary",
    "read_parts",
    "visible_series",
    "write_parts",
    "zip_response",
]
