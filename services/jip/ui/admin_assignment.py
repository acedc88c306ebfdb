"""``/ui/admin/assignment``: which project a series belongs to.

Assignment rules (``/api/projects/rules``, site admins) put each new series into the
project of every enabled rule that matches its calling AE title and/or a header field;
a series no rule matches goes to ``store.default_project``. Rules only see series that
arrive after them, so the page also assigns a series by hand (``PUT``/``DELETE
/api/projects/{name}/series/{uid}``), which project owners may do in their projects.
"""

from __future__ import annotations

from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, Form, Request, Response

from jip import errors
from jip.base import CurrentUser, ProjectRole
from jip.store import RULE_FIELDS
from jip.ui.admin import ADMIN, AdminUserDep, act, api_call, page, said, set_enabled
from jip.ui.api import Api
from jip.ui.routes import CsrfField, PageRoute, UserDep

ASSIGNMENT = f"{ADMIN}/assignment"
RULES = f"{ASSIGNMENT}/rules"
SERIES = f"{ASSIGNMENT}/series"
RULES_API = "/api/projects/rules"

router = APIRouter(tags=["ui"], route_class=PageRoute, include_in_schema=False)


def owner_user(request: Request, user: UserDep) -> CurrentUser:
    """Site admins, and owners of a project (they assign series there by hand)."""
    request.state.ui_user = user
    if not user.is_admin and ProjectRole.OWNER not in user.projects.values():
        raise errors.Forbidden("this page is for site admins and project owners")
    return user


OwnerUserDep = Annotated[CurrentUser, Depends(owner_user)]


@router.get(ASSIGNMENT)
async def assignment_page(request: Request, user: OwnerUserDep) -> Response:
    api = Api(request)
    projects = [p["name"] for p in await api.get("/api/projects")]
    return page(
        request,
        "admin_assignment.html",
        rules=await api.get(RULES_API) if user.is_admin else [],
        projects=projects,
        owned=[p for p in projects if user.has_role(p, ProjectRole.OWNER)],
        fields=sorted(RULE_FIELDS),
    )


# -- rules (site admins) ---------------------------------------------------------------------
@router.post(RULES)
async def create_rule(
    request: Request,
    user: AdminUserDep,
    project: Annotated[str, Form()],
    calling_ae_title: Annotated[str, Form()] = "",
    field: Annotated[str, Form()] = "",
    pattern: Annotated[str, Form()] = "",
    enabled: Annotated[bool, Form()] = False,
    csrf_token: CsrfField = "",
) -> Response:
    body = {
        "project": project,
        "calling_ae_title": calling_ae_title.strip(),
        "field": field,
        "pattern": pattern.strip(),
        "enabled": enabled,
    }

    def done(rule: dict[str, Any]) -> str:
        return f"rule {rule['id']} created: matching series go to {rule['project']}"

    return await act(
        request, csrf_token, ASSIGNMENT, lambda api: api.post(RULES_API, json=body), done
    )


@router.post(RULES + "/{rule_id}/enable")
async def enable_rule(
    request: Request, user: AdminUserDep, rule_id: str, csrf_token: CsrfField = ""
) -> Response:
    return await set_enabled(request, csrf_token, ASSIGNMENT, ("projects", rule_id), enabled=True)


@router.post(RULES + "/{rule_id}/disable")
async def disable_rule(
    request: Request, user: AdminUserDep, rule_id: str, csrf_token: CsrfField = ""
) -> Response:
    return await set_enabled(request, csrf_token, ASSIGNMENT, ("projects", rule_id), enabled=False)


@router.post(RULES + "/{rule_id}/delete")
async def delete_rule(
    request: Request, user: AdminUserDep, rule_id: str, csrf_token: CsrfField = ""
) -> Response:
    action = api_call("DELETE", "projects", "rules", rule_id)
    return await act(request, csrf_token, ASSIGNMENT, action, said(f"rule {rule_id} deleted"))


# -- series by hand (admins, project owners) -----------------------------------------------
@router.post(SERIES)
async def assign_series(
    request: Request,
    user: OwnerUserDep,
    series_uid: Annotated[str, Form()],
    project: Annotated[str, Form()],
    csrf_token: CsrfField = "",
) -> Response:
    uid = series_uid.strip()

    def done(response: httpx.Response) -> str:
        return f"series {uid} is in {', '.join(response.json()['projects'])}"

    action = api_call("PUT", "projects", project, "series", uid)
    return await act(request, csrf_token, ASSIGNMENT, action, done)


@router.post(SERIES + "/remove")
async def unassign_series(
    request: Request,
    user: OwnerUserDep,
    series_uid: Annotated[str, Form()],
    project: Annotated[str, Form()],
    csrf_token: CsrfField = "",
) -> Response:
    uid = series_uid.strip()
    action = api_call("DELETE", "projects", project, "series", uid)
    return await act(
        request, csrf_token, ASSIGNMENT, action, said(f"series {uid} removed from {project}")
    )
