"""Download links of the cohort and run pages: the zip streamed from the API.

``/ui/cohorts/{id}/download`` and ``/ui/runs/{id}/download`` hand the request to
``/api/meta/cohorts/{id}/download`` and ``/api/flow/runs/{id}/download`` with the
session's token (:class:`jip.ui.forward.Forward`), so the browser gets the same scoped,
audited zip as any client, streamed: the browser's download bar is the progress.
"""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import quote

from fastapi import APIRouter, Query, Request, Response

from jip.ui.forward import Forward
from jip.ui.routes import PageRoute, UserDep

router = APIRouter(tags=["ui"], route_class=PageRoute, include_in_schema=False)

FormatQuery = Annotated[Literal["dicom", "nifti"], Query(alias="format")]


@router.get("/ui/cohorts/{cohort_id}/download")
async def download_cohort(
    request: Request, user: UserDep, cohort_id: str, fmt: FormatQuery = "dicom"
) -> Response:
    return Forward(request, f"/api/meta/cohorts/{quote(cohort_id)}/download", {"format": fmt})


@router.get("/ui/runs/{run_id}/download")
async def download_run(
    request: Request, user: UserDep, run_id: str, fmt: FormatQuery = "dicom"
) -> Response:
    return Forward(request, f"/api/flow/runs/{quote(run_id)}/download", {"format": fmt})
