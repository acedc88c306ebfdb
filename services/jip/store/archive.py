"""Stored instances out as a zip, streamed: cohort and run-result downloads.

Neither the archive nor any instance is held whole in memory or written to disk: the
zip (:mod:`jip.store.zip_stream`) hands each chunk on as it is written. DICOM members
are the stored bytes, unchanged; a series can instead be a NIfTI volume
(:mod:`jip.store.archive_nifti`). Members are named by UIDs only (no patient names in
file names, which travel further than the files' contents are looked at).

Which instances a series contributes is read through a catalog scoped to the caller's
projects (:func:`scoped_instances`): a series outside them is left out, never widened.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

from jip.errors import NotFound
from jip.store.archive_nifti import NiftiWriter
from jip.store.catalog.catalog import Catalog, StoredInstance
from jip.store.storage.port import BlobStorage
from jip.store.zip_stream import (
    ArchiveFormat,
    ArchiveStats,
    SeriesSelection,
    ZipStream,
    dicom_members,
)

MANIFEST = "manifest.json"


# Writes one series into the zip (DICOM as stored, or NIfTI): yields the zip's bytes.
SeriesWriter = Callable[[BlobStorage, ZipStream, SeriesSelection], Iterator[bytes]]


def stream_archive(
    storage: BlobStorage,
    selections: Iterable[SeriesSelection],
    *,
    stats: ArchiveStats,
    fmt: ArchiveFormat = ArchiveFormat.DICOM,
    extra_files: Iterable[tuple[str, Callable[[], BinaryIO], int]] = (),
    manifest: Mapping[str, object] | None = None,
    spool_dir: Path | None = None,
) -> Iterator[bytes]:
    """The zip of ``selections`` (and ``extra_files``: name, opener, size), streamed.

    ``stats`` is filled in as members are written, ``complete`` only after the last
    byte, so a caller that records it in ``finally`` tells a cut download from a whole
    one. A ``manifest.json`` closes the archive: what is in it and what was left as
    DICOM and why (NIfTI needs single-frame image slices).
    """
    zs = ZipStream(stats)
    writer: SeriesWriter = dicom_members
    if fmt is ArchiveFormat.NIFTI:
        writer = NiftiWriter(spool_dir or Path("/tmp"))
    for selection in selections:
        stats.series += 1
        yield from writer(storage, zs, selection)
    for name, opener, size in extra_files:
        with opener() as source:
            yield from zs.member(name, source, size)
    document = {**(manifest or {}), "format": fmt.value, **stats.as_detail(), "notes": stats.notes}
    document.pop("complete", None)
    document.pop("zip_bytes", None)
    yield from zs.text(MANIFEST, json.dumps(document, indent=2) + "\n")
    yield from zs.close()
    stats.complete = True


def scoped_instances(
    catalog: Catalog, series_uids: Iterable[str]
) -> Iterator[list[StoredInstance]]:
    """The instances of each series ``catalog`` (scoped to the caller's projects) reads,
    one series at a time; a series outside the scope is left out, as if it did not
    exist."""
    for uid in series_uids:
        try:
            yield catalog.instances_of_series(uid)
        except NotFound:
            continue


def archive_totals(catalog: Catalog, series_uids: Iterable[str]) -> tuple[int, int, int]:
    """Series, instances and stored bytes a download will read (for its audit entry and
    the client's progress), counted without keeping the instance lists."""
    series = instances = size = 0
    for found in scoped_instances(catalog, series_uids):
        series, instances = series + 1, instances + len(found)
        size += sum(i.size_bytes for i in found)
    return series, instances, size


def content_disposition(name: str) -> str:
    """An attachment header for ``name``, kept to safe characters."""
    safe = "".join(c if c.isalnum() or c in "._-" else "-" for c in name).strip("-.")
    return f'attachment; filename="{safe or "download"}.zip"'
