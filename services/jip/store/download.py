"""A download's HTTP answer: the zip of what the caller may read, streamed and audited.

Cohort downloads (META) and run-result downloads (FLOW) name their series and extra
files in a :class:`DownloadRequest`; :func:`zip_response` reads the series through a
catalog scoped to the caller's projects (a series outside them is left out, counted in
the manifest without its UID), records what was asked for in the audit log before the
first byte, and what was sent after the last one (or when the client went away).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, BinaryIO

from fastapi import Depends, Query, Request
from fastapi.responses import StreamingResponse

from jip.base import AuditLog
from jip.store.archive import (
    archive_totals,
    content_disposition,
    scoped_instances,
    stream_archive,
)
from jip.store.catalog.catalog import StoredInstance
from jip.store.deps import get_settings_dep
from jip.store.ingest import Ingestor
from jip.store.zip_stream import ArchiveFormat, ArchiveStats, SeriesSelection

# A file beside the series (a run's CSV): its name in the zip, how to open it, its size.
FileEntry = tuple[str, Callable[[], BinaryIO], int]


def spool_dir_of(request: Request) -> Path:
    """Where a NIfTI volume is written before it goes into the zip."""
    return get_settings_dep(request).data_dir / "tmp"


SpoolDirDep = Annotated[Path, Depends(spool_dir_of)]
ArchiveFormatQuery = Annotated[
    ArchiveFormat, Query(description="dicom (as stored) or nifti (a .nii.gz per image series)")
]


@dataclass(frozen=True)
class DownloadAudit:
    """The audit entries of one download: what was asked for when it starts
    (``<action>``), what was sent when it ends or the client goes away
    (``<action>.done``, whose ``complete`` tells the two apart)."""

    log: AuditLog
    action: str
    username: str
    target: str
    client_ip: str

    def asked(self, detail: Mapping[str, object]) -> None:
        self._record(self.action, dict(detail))

    def sent(self, stats: ArchiveStats) -> None:
        self._record(f"{self.action}.done", stats.as_detail())

    def _record(self, action: str, detail: dict[str, object]) -> None:
        self.log.record(
            action,
            username=self.username,
            target=self.target,
            client_ip=self.client_ip,
            detail=detail,
        )


def audited(chunks: Iterator[bytes], stats: ArchiveStats, audit: DownloadAudit) -> Iterator[bytes]:
    """``chunks``, and the audit entry of what was sent once they end."""
    try:
        yield from chunks
    finally:
        audit.sent(stats)


def study_folder(first: StoredInstance) -> str:
    """``<StudyInstanceUID>/<SeriesInstanceUID>``: a cohort's layout."""
    return f"{first.study_instance_uid}/{first.series_instance_uid}"


@dataclass(frozen=True)
class DownloadRequest:
    """What goes into one zip, and what the audit and the manifest say about it."""

    series: list[str]
    filename: str  # without .zip
    fmt: ArchiveFormat
    audit: DownloadAudit
    about: Mapping[str, object]  # what was downloaded: into the manifest and the audit
    folder_of: Callable[[StoredInstance], str] = study_folder  # from a series' first instance
    files: list[FileEntry] = field(default_factory=list)


def zip_response(
    ingestor: Ingestor, scope: set[str] | None, request: DownloadRequest, spool_dir: Path
) -> StreamingResponse:
    """The zip of ``request`` as the caller of ``scope`` (None: every project) may read it."""
    catalog = ingestor.catalog.scoped(scope)
    series, instances, size = archive_totals(catalog, request.series)
    files_size = sum(f[2] for f in request.files)
    request.audit.asked({**request.about, "format": request.fmt.value, "series": series,
                         "instances": instances, "files": len(request.files),
                         "stored_bytes": size + files_size})  # fmt: skip
    stats = ArchiveStats()
    if left_out := len(request.series) - series:
        stats.notes.append({"note": f"{left_out} series are outside your projects or gone"})
    selections = (
        SeriesSelection(request.folder_of(found[0]), found)
        for found in scoped_instances(catalog, request.series)
    )
    chunks = stream_archive(
        ingestor.storage,
        selections,
        stats=stats,
        fmt=request.fmt,
        extra_files=request.files,
        manifest={**request.about, "files": len(request.files)},
        spool_dir=spool_dir,
    )
    return StreamingResponse(
        audited(chunks, stats, request.audit),
        media_type="application/zip",
        headers={
            "Content-Disposition": content_disposition(request.filename),
            "X-JIP-Series": str(series),
            "X-JIP-Instances": str(instances),
            "X-JIP-Stored-Bytes": str(size + files_size),
        },
    )
