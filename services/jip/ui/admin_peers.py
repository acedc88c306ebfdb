"""Admin pages for what the site does on its own: DICOM peers and auto-rules.

Peers (``/ui/admin/peers``) are the remote AEs the site queries and C-MOVEs to, and
whose projects limit what they see when they query us;
auto-rules (``/ui/admin/rules``) start a workflow on every complete series matching a
cohort query. Both go through their APIs (``/api/dicom/peers``, ``/api/flow/rules``),
which are for site admins. Helpers are shared with :mod:`.admin`.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Form, Query, Request, Response

from jip import errors
from jip.config import DicomPeer
from jip.ui.admin import (
    ADMIN,
    AdminUserDep,
    act,
    api_call,
    error_message,
    page,
    said,
    set_enabled,
)
from jip.ui.api import Api, ApiError
from jip.ui.routes import CsrfField, PageRoute

PEERS = f"{ADMIN}/peers"
RULES = f"{ADMIN}/rules"

router = APIRouter(tags=["ui"], route_class=PageRoute, include_in_schema=False)


# -- DICOM peers -----------------------------------------------------------------------------
@router.get(PEERS)
async def peers_page(
    request: Request, user: AdminUserDep, edit: Annotated[str, Query()] = ""
) -> Response:
    """The peers; ``?edit=name`` fills the form with that peer to change it."""
    api = Api(request)
    peers = await api.get("/api/dicom/peers")
    editing = next((p for p in peers if p["name"] == edit), None)
    projects = [p["name"] for p in await api.get("/api/projects")]
    return page(request, "admin_peers.html", peers=peers, editing=editing, projects=projects)


@router.post(PEERS)
async def put_peer(
    request: Request,
    user: AdminUserDep,
    name: Annotated[str, Form()],
    ae_title: Annotated[str, Form()],
    host: Annotated[str, Form()],
    port: Annotated[str, Form()],
    projects: Annotated[list[str] | None, Form()] = None,
    csrf_token: CsrfField = "",
) -> Response:
    """Add or change a peer (PUT /api/dicom/peers/{name}); no project ticked: it sees all."""

    async def save(api: Api) -> Any:
        # Checked here first so that a typo gets the field's message, not a 422 dump.
        fields = {"ae_title": ae_title, "host": host, "port": port, "projects": projects or []}
        peer = DicomPeer.model_validate(fields)
        return await api_call("PUT", "dicom", "peers", name, json=peer.model_dump())(api)

    return await act(request, csrf_token, PEERS, save, said(f"peer {name} saved"))


@router.post(PEERS + "/{name}/delete")
async def delete_peer(
    request: Request, user: AdminUserDep, name: str, csrf_token: CsrfField = ""
) -> Response:
    action = api_call("DELETE", "dicom", "peers", name)
    return await act(request, csrf_token, PEERS, action, said(f"peer {name} removed"))


@router.post(PEERS + "/{name}/echo")
async def echo_peer(
    request: Request, user: AdminUserDep, name: str, csrf_token: CsrfField = ""
) -> Response:
    """C-ECHO the peer; the result (or why it failed) is the page's message."""

    def done(response: httpx.Response) -> str:
        result = response.json()
        status = int(result["status"])
        outcome = "success" if status == 0 else f"status 0x{status:04X}"
        return f"C-ECHO {name}: {outcome} in {result['seconds'] * 1000:.0f} ms"

    action = api_call("POST", "dicom", "peers", name, "echo")
    return await act(request, csrf_token, PEERS, action, done)


# -- auto-rules ------------------------------------------------------------------------------
@router.get(RULES)
async def rules_page(request: Request, user: AdminUserDep) -> Response:
    """The rules, and a form whose workflow list comes from the engine (if reachable)."""
    api = Api(request)
    rules = await api.get("/api/flow/rules")
    try:
        workflows, engine_problem = await api.get("/api/flow/workflows"), ""
    except ApiError as exc:
        workflows, engine_problem = [], error_message(exc)
    return page(
        request,
        "admin_rules.html",
        rules=rules,
        workflows=[w["dag_id"] for w in workflows],
        engine_problem=engine_problem,
    )


@router.post(RULES)
async def create_rule(
    request: Request,
    user: AdminUserDep,
    name: Annotated[str, Form()],
    dag_id: Annotated[str, Form()],
    query: Annotated[str, Form()] = "{}",
    params: Annotated[str, Form()] = "{}",
    enabled: Annotated[bool, Form()] = False,
    csrf_token: CsrfField = "",
) -> Response:
    async def create(api: Api) -> Any:
        body = {
            "name": name,
            "dag_id": dag_id,
            "query": _json_object("query", query),
            "params": _json_object("params", params),
            "enabled": enabled,
        }
        return await api.post("/api/flow/rules", json=body)

    return await act(request, csrf_token, RULES, create, said(f"rule {name} created"))


@router.post(RULES + "/{rule}/enable")
async def enable_rule(
    request: Request, user: AdminUserDep, rule: str, csrf_token: CsrfField = ""
) -> Response:
    return await set_enabled(request, csrf_token, RULES, ("flow", rule), enabled=True)


@router.post(RULES + "/{rule}/disable")
async def disable_rule(
    request: Request, user: AdminUserDep, rule: str, csrf_token: CsrfField = ""
) -> Response:
    return await set_enabled(request, csrf_token, RULES, ("flow", rule), enabled=False)


@router.post(RULES + "/{rule}/delete")
async def delete_rule(
    request: Request, user: AdminUserDep, rule: str, csrf_token: CsrfField = ""
) -> Response:
    action = api_call("DELETE", "flow", "rules", rule)
    return await act(request, csrf_token, RULES, action, said(f"rule {rule} deleted"))


def _json_object(field: str, text: str) -> dict[str, Any]:
    try:
        parsed = json.loads(text or "{}")
    except ValueError as exc:
        raise errors.Invalid(f"{field}: not valid JSON ({exc})") from None
    if not isinstance(parsed, dict):
        raise errors.Invalid(f"{field}: expected a JSON object")
    return parsed
