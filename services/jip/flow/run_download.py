"""``GET /api/flow/runs/{run_id}/download``: a run's results as one zip, streamed.

DICOM results (SEG, SR, derived images) come from the store as stored, or as NIfTI per
image series (``?format=nifti``); file results (CSV, JSON, NIfTI) from the result store,
as delivered. The run and each result pass the flow service's checks (a run of series
the caller cannot see does not exist for them; a file outside the run's own folder is
never served), and the DICOM series are read through a catalog scoped to the caller's
projects (:func:`jip.store.zip_response`). Audited like a cohort download: what was
asked, then what was sent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import BinaryIO

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from jip.base import AuditDep, ClientIpDep, CurrentUserDep, project_scope
from jip.flow.deps import FlowServiceDep, ResultsStorageDep
from jip.flow.result_keys import safe_segment
from jip.flow.schema import ResultKind
from jip.store import (
    ArchiveFormat,
    ArchiveFormatQuery,
    BlobStorage,
    DownloadAudit,
    DownloadRequest,
    FileEntry,
    IngestorDep,
    SpoolDirDep,
    StoredInstance,
    zip_response,
)

router = APIRouter(prefix="/api/flow", tags=["flow"])


def _opener(storage: BlobStorage, key: str) -> Callable[[], BinaryIO]:
    return lambda: storage.open(key)


@router.get("/runs/{run_id}/download")
def download_run(
    run_id: str,
    service: FlowServiceDep,
    results_storage: ResultsStorageDep,
    ingestor: IngestorDep,
    user: CurrentUserDep,
    audit: AuditDep,
    ip: ClientIpDep,
    spool_dir: SpoolDirDep,
    format: ArchiveFormatQuery = ArchiveFormat.DICOM,
) -> StreamingResponse:
    """Every result of the run the caller may read, as a zip: under each source series'
    folder, its DICOM result series (``<result series>/…``) and its result files."""
    results = service.results(run_id)  # NotFound for a run the caller cannot see
    folders: dict[str, str] = {}  # result series -> <source series>/<result series>
    files: list[FileEntry] = []
    for result in results:
        source = result.series_instance_uid
        if result.kind is ResultKind.DICOM and result.result_series_uid:
            folders[result.result_series_uid] = f"{source}/{result.result_series_uid}"
            continue
        record = service.result(run_id, result.id)  # the per-file checks
        name = "/".join(safe_segment(p) for p in record.name.split("/") if p)
        files.append((f"{source}/{name}", _opener(results_storage, record.key), record.size_bytes))

    def folder_of(first: StoredInstance) -> str:
        return folders[first.series_instance_uid]

    request = DownloadRequest(
        series=list(folders),
        filename=f"run-{safe_segment(run_id)}",
        fmt=format,
        audit=DownloadAudit(audit, "flow.run.download", user.username, f"run:{run_id}", ip),
        about={"run_id": run_id},
        folder_of=folder_of,
        files=files,
    )
    return zip_response(ingestor, project_scope(user), request, spool_dir)
