"""``GET /api/meta/cohorts/{id}/download``: a cohort's series as a zip, streamed.

DICOM as stored, or NIfTI per image series (``?format=nifti``). The cohort names
series; which of their instances go into the zip the store decides with the caller's
project scope (:func:`jip.store.zip_response`), so a series of a project the caller
cannot read is never in it, whatever the cohort's query or frozen list says. The audit
log holds who asked for what and how much (instances, bytes) when the download starts,
and what was sent, and whether all of it, when it ends.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from jip.base import AuditDep, ClientIpDep, CurrentUserDep, project_scope
from jip.meta.cohort_routes import router as cohort_router
from jip.meta.deps import CohortsDep
from jip.store import (
    ArchiveFormat,
    ArchiveFormatQuery,
    DownloadAudit,
    DownloadRequest,
    IngestorDep,
    SpoolDirDep,
    zip_response,
)

router = APIRouter(prefix=cohort_router.prefix, tags=["meta"])


@router.get("/cohorts/{cohort_id}/download")
def download_cohort(
    cohort_id: str,
    cohorts: CohortsDep,
    user: CurrentUserDep,
    ingestor: IngestorDep,
    audit: AuditDep,
    ip: ClientIpDep,
    spool_dir: SpoolDirDep,
    format: ArchiveFormatQuery = ArchiveFormat.DICOM,
) -> StreamingResponse:
    """The cohort's series the caller may read, as a zip streamed as it is written:
    ``<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm`` (or ``….nii.gz``)."""
    info = cohorts.get(user, cohort_id)
    request = DownloadRequest(
        series=cohorts.series_uids(user, cohort_id),
        filename=info.name,
        fmt=format,
        audit=DownloadAudit(audit, "meta.cohort.download", user.username, f"cohort:{info.id}", ip),
        about={"cohort": info.name, "cohort_id": info.id, "project": info.project},
    )
    return zip_response(ingestor, project_scope(user), request, spool_dir)
