"""The Upload page: drop files, folders or zips into a project, watch each file's
progress, read what became of each (stored, duplicate, skipped, refused and why).

The browser sends batches of files as form data to ``POST /ui/upload``, which hands the
request, streamed, to ``POST /api/store/upload`` with the session's token
(:class:`jip.ui.forward.Forward`): the API's project checks and audit apply, and a 2 GB
zip never sits in this process' memory. The script is ``static/upload.js``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response

from jip.base import CurrentUser, ProjectRole
from jip.ui.api import Api
from jip.ui.forward import Forward
from jip.ui.routes import PageRoute, UserDep, render
from jip.ui.session import check_csrf

router = APIRouter(tags=["ui"], route_class=PageRoute, include_in_schema=False)


async def writable_projects(request: Request, user: CurrentUser) -> list[str]:
    """The projects the caller may store into: researcher or owner (admins: all)."""
    if user.is_admin:
        return sorted(p["name"] for p in await Api(request).get("/api/projects"))
    return sorted(p for p, role in user.projects.items() if role.at_least(ProjectRole.RESEARCHER))


@router.get("/ui/upload")
async def upload_page(
    request: Request, user: UserDep, project: Annotated[str | None, Query()] = None
) -> Response:
    request.state.ui_user = user
    projects = await writable_projects(request, user)
    return render(request, "upload.html", projects=projects, chosen=project)


@router.post("/ui/upload")
async def upload(
    request: Request,
    user: UserDep,
    project: Annotated[str, Query(min_length=1)],
    csrf: Annotated[str, Header(alias="X-CSRF-Token")] = "",
) -> Response:
    """One batch of the page's files, answered by the upload API (JSON)."""
    check_csrf(request, csrf)
    return Forward(request, "/api/store/upload", {"project": project})
