"""The admin pages under ``/ui/admin``: site status, users, projects and roles, the audit log.

DICOM peers and auto-rules are in :mod:`.admin_peers`. As every UI page, these read
and change data only through the site's API with the session's token, so the API's
checks and audit records apply. A form post redirects back to its page with a short
message in a cookie (a "flash"); an error of the API becomes such a message, never a
500. Site admins see every page; other users see the projects they belong to, and
owners manage their members there.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Form, Query, Request, Response
from pydantic import ValidationError

from jip import errors
from jip.base import CurrentUser
from jip.ui.api import Api, ApiError
from jip.ui.routes import CsrfField, PageRoute, UserDep, render, see_other
from jip.ui.session import check_csrf, set_cookie

ADMIN = "/ui/admin"
FLASH_COOKIE = "jip_flash"
ROLES = ("owner", "researcher", "viewer")
AUDIT_PAGE = 100

router = APIRouter(tags=["ui"], route_class=PageRoute, include_in_schema=False)


def admin_user(request: Request, user: UserDep) -> CurrentUser:
    """The session's user, if a site admin; others get a 403 page."""
    request.state.ui_user = user
    if not user.is_admin:
        raise errors.Forbidden("this page is for site admins")
    return user


def member_user(request: Request, user: UserDep) -> CurrentUser:
    request.state.ui_user = user
    return user


AdminUserDep = Annotated[CurrentUser, Depends(admin_user)]
MemberUserDep = Annotated[CurrentUser, Depends(member_user)]
Action = Callable[[Api], Awaitable[Any]]


# -- flash messages and form posts ----------------------------------------------------------
def page(request: Request, template: str, **context: Any) -> Response:
    """Render an admin page with the flash message left by the last form post, if any."""
    flash = _read_flash(request.cookies.get(FLASH_COOKIE, ""))
    response = render(request, template, flash=flash, **context)
    if flash is not None:
        response.delete_cookie(FLASH_COOKIE, path=ADMIN)
    return response


async def act(
    request: Request, csrf_token: str, back: str, action: Action, done: Callable[[Any], str]
) -> Response:
    """Run a form's API call and go back to ``back`` saying how it went."""
    check_csrf(request, csrf_token)
    try:
        result = await action(Api(request))
    except (ApiError, errors.JipError, ValidationError) as exc:
        return flashed(request, back, error_message(exc), error=True)
    return flashed(request, back, done(result))


def flashed(request: Request, url: str, text: str, *, error: bool = False) -> Response:
    response = see_other(url)
    raw = json.dumps({"text": text[:1000], "error": error}).encode()
    # base64: the message holds user input, and a cookie value must not.
    set_cookie(request, response, FLASH_COOKIE, base64.urlsafe_b64encode(raw).decode(), path=ADMIN)
    return response


def _read_flash(value: str) -> dict[str, Any] | None:
    if not value:
        return None
    try:
        flash = json.loads(base64.urlsafe_b64decode(value.encode()))
    except (ValueError, binascii.Error):
        return None
    if not isinstance(flash, dict):
        return None
    return {"text": str(flash.get("text", "")), "error": bool(flash.get("error"))}


def error_message(exc: Exception) -> str:
    if isinstance(exc, ApiError):
        return f"{exc.detail} (HTTP {exc.status})"
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
    return str(exc)


def said(text: str) -> Callable[[Any], str]:
    return lambda _result: text


def api_call(method: str, *segments: str, **kwargs: Any) -> Action:
    """The call ``method /api/<segments>`` (each segment URL-quoted) for :func:`act`."""
    path = "/api/" + "/".join(quote(segment, safe="") for segment in segments)
    return lambda api: api.call(method, path, **kwargs)


async def set_enabled(
    request: Request, csrf_token: str, back: str, rule: tuple[str, str], *, enabled: bool
) -> Response:
    """Enable or disable a rule: ``rule`` is (the API's service, the rule's id)."""
    service, rule_id = rule
    action = api_call("PATCH", service, "rules", rule_id, json={"enabled": enabled})
    done = said(f"rule {rule_id} {'enabled' if enabled else 'disabled'}")
    return await act(request, csrf_token, back, action, done)


# -- overview ------------------------------------------------------------------------------
@router.get(ADMIN)
async def overview(request: Request, user: MemberUserDep) -> Response:
    """Site status at a glance (admins); other users go to their projects."""
    if not user.is_admin:
        return see_other(f"{ADMIN}/projects")
    api = Api(request)
    return page(
        request,
        "admin.html",
        status=await api.get("/api/admin/status"),
        users=await api.get("/api/users"),
        projects=await api.get("/api/projects"),
        audit=await api.get("/api/audit", params={"limit": 10}),
    )


# -- users ---------------------------------------------------------------------------------
USERS = f"{ADMIN}/users"


@router.get(USERS)
async def users_page(request: Request, user: AdminUserDep) -> Response:
    return page(request, "admin_users.html", users=await Api(request).get("/api/users"))


@router.post(USERS)
async def create_user(
    request: Request,
    user: AdminUserDep,
    username: Annotated[str, Form()],
    password: Annotated[str, Form()] = "",
    is_admin: Annotated[bool, Form()] = False,
    csrf_token: CsrfField = "",
) -> Response:
    body = {"username": username, "is_admin": is_admin, "password": password or None}

    def done(created: dict[str, Any]) -> str:
        once = created.get("one_time_password")
        extra = f"; one-time password (shown once): {once}" if once else ""
        return f"user {created['username']} created{extra}"

    return await act(
        request, csrf_token, USERS, lambda api: api.post("/api/users", json=body), done
    )


@router.post(USERS + "/{username}/disable")
async def disable_user(
    request: Request, user: AdminUserDep, username: str, csrf_token: CsrfField = ""
) -> Response:
    return await _update_user(request, csrf_token, username, disabled=True)


@router.post(USERS + "/{username}/enable")
async def enable_user(
    request: Request, user: AdminUserDep, username: str, csrf_token: CsrfField = ""
) -> Response:
    return await _update_user(request, csrf_token, username, disabled=False)


async def _update_user(request: Request, csrf_token: str, username: str, **change: Any) -> Response:
    state = "disabled" if change["disabled"] else "enabled"
    action = api_call("PATCH", "users", username, json=change)
    return await act(request, csrf_token, USERS, action, said(f"user {username} {state}"))


@router.post(USERS + "/{username}/password")
async def reset_password(
    request: Request,
    user: AdminUserDep,
    username: str,
    password: Annotated[str, Form()],
    csrf_token: CsrfField = "",
) -> Response:
    action = api_call("PUT", "users", username, "password", json={"password": password})
    done = said(f"password of {username} set; their sessions ended")
    return await act(request, csrf_token, USERS, action, done)


@router.post(USERS + "/{username}/remove")
async def remove_user(
    request: Request, user: AdminUserDep, username: str, csrf_token: CsrfField = ""
) -> Response:
    action = api_call("DELETE", "users", username)
    return await act(request, csrf_token, USERS, action, said(f"user {username} removed"))


# -- projects and roles ----------------------------------------------------------------------
PROJECTS = f"{ADMIN}/projects"


@router.get(PROJECTS)
async def projects_page(request: Request, user: MemberUserDep) -> Response:
    """Every project for admins; for others their own (owners manage members)."""
    api = Api(request)
    users = await api.get("/api/users") if user.is_admin else []
    return page(
        request,
        "admin_projects.html",
        projects=await api.get("/api/projects"),
        usernames=[u["username"] for u in users],
        roles=ROLES,
    )


@router.post(PROJECTS)
async def create_project(
    request: Request,
    user: AdminUserDep,
    name: Annotated[str, Form()],
    description: Annotated[str, Form()] = "",
    owner: Annotated[str, Form()] = "",
    csrf_token: CsrfField = "",
) -> Response:
    body = {"name": name, "description": description, "owner": owner or None}
    return await act(
        request,
        csrf_token,
        PROJECTS,
        lambda api: api.post("/api/projects", json=body),
        lambda created: f"project {created['name']} created",
    )


@router.post(PROJECTS + "/{name}/members")
async def set_member(
    request: Request,
    user: MemberUserDep,
    name: str,
    username: Annotated[str, Form()],
    role: Annotated[str, Form()],
    csrf_token: CsrfField = "",
) -> Response:
    action = api_call("PUT", "projects", name, "members", username, json={"role": role})
    done = said(f"{username} is {role} in {name} (from their next login)")
    return await act(request, csrf_token, PROJECTS, action, done)


@router.post(PROJECTS + "/{name}/members/{username}/remove")
async def remove_member(
    request: Request, user: MemberUserDep, name: str, username: str, csrf_token: CsrfField = ""
) -> Response:
    action = api_call("DELETE", "projects", name, "members", username)
    return await act(request, csrf_token, PROJECTS, action, said(f"{username} removed from {name}"))


# -- audit log -----------------------------------------------------------------------------
AUDIT = f"{ADMIN}/audit"


def audit_filters(
    username: Annotated[str, Query()] = "",
    action: Annotated[str, Query()] = "",
    since: Annotated[str, Query()] = "",
) -> dict[str, str]:
    """The filled-in filters of the audit form, as the audit API takes them."""
    given = {"username": username.strip(), "action": action.strip(), "since": since.strip()}
    return {key: value for key, value in given.items() if value}


AuditFiltersDep = Annotated[dict[str, str], Depends(audit_filters)]


@router.get(AUDIT)
async def audit_page(
    request: Request,
    user: AdminUserDep,
    filters: AuditFiltersDep,
    before_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
) -> Response:
    params: dict[str, Any] = {**filters, "limit": AUDIT_PAGE}
    if before_id is not None:
        params["before_id"] = before_id
    try:
        entries = await Api(request).get("/api/audit", params=params)
        problem = ""
    except ApiError as exc:  # a filter the API refuses, such as a malformed date
        entries, problem = [], error_message(exc)
    older = None
    if len(entries) == AUDIT_PAGE:
        older = f"{AUDIT}?" + urlencode({**filters, "before_id": entries[-1]["id"]})
    return page(
        request,
        "admin_audit.html",
        entries=entries,
        filters=filters,
        problem=problem,
        older=older,
        export=f"{AUDIT}/export?{urlencode(filters)}",
    )


@router.get(AUDIT + "/export")
async def export_audit(request: Request, user: AdminUserDep, filters: AuditFiltersDep) -> Response:
    """The filtered log as CSV, from the audit API (which records the export itself)."""
    response = await Api(request).call("GET", "/api/audit/export", params=filters)
    disposition = response.headers.get("content-disposition", "attachment")
    return Response(
        response.content,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": disposition},
    )
