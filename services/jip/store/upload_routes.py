"""``POST /api/store/upload``: files and zips into a project, one result per file.

Who may store where is STOW-RS's rule (:func:`jip.store.dicomweb.stow.target_project`):
the researcher role in the named project (site admins: any project), and no instance
may join a series outside the caller's writable projects. A refused caller is refused
before any byte of the body is read. Every upload is in the audit log with its counts.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from jip.base import AuditDep, ClientIpDep, CurrentUserDep, ProjectsDep
from jip.errors import Invalid, TooLarge
from jip.store.deps import IngestorDep, SettingsDep
from jip.store.dicomweb.multipart import read_parts
from jip.store.dicomweb.stow import store_access, target_project
from jip.store.upload import Uploader, check_form

router = APIRouter(prefix="/api/store", tags=["store"])


@router.post("/upload")
async def upload(
    request: Request,
    ingestor: IngestorDep,
    settings: SettingsDep,
    user: CurrentUserDep,
    projects: ProjectsDep,
    audit: AuditDep,
    ip: ClientIpDep,
    project: Annotated[
        str | None, Query(description="The project new series go to (researcher role).")
    ] = None,
) -> dict[str, Any]:
    """Store DICOM files and zips sent as multipart/form-data; each file (each zip member)
    gets a result: stored, duplicate, refused (with the reason) or skipped."""
    chosen = target_project(user, project, projects)  # refused before the body is read
    boundary = check_form(request.headers.get("content-type", ""))
    max_bytes = settings.store.max_upload_bytes
    length = request.headers.get("content-length", "")
    if length.isdecimal() and int(length) > max_bytes:
        raise TooLarge(
            f"upload of {length} bytes exceeds store.max_upload_bytes ({max_bytes}): "
            "send it in several uploads"
        )
    spool_root = settings.data_dir / "tmp"
    spool_root.mkdir(parents=True, exist_ok=True)
    spool = Path(tempfile.mkdtemp(dir=spool_root, prefix="upload-"))
    try:
        parts = await read_parts(
            request.stream(), boundary, spool, max_bytes, settings.store.dicomweb.max_stow_parts
        )
        if not parts:
            raise Invalid("the upload holds no files")
        uploader = Uploader(
            ingestor,
            project=chosen,
            access=store_access(user),
            spool=spool,
            max_member_bytes=max_bytes,
        )
        report = await run_in_threadpool(uploader.store_all, parts)
    finally:
        await run_in_threadpool(shutil.rmtree, spool, True)
    body = report.as_json()
    audit.record(
        "store.upload",
        username=user.username,
        target=f"project:{chosen}" if chosen else "project:(rules)",
        client_ip=ip,
        detail={k: v for k, v in body.items() if k != "results"},
    )
    return body
