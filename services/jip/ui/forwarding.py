"""Sending from the browser: the admin's forwarding page and the run page's "Send to…".

``/ui/admin/forwarding`` lists the forwarding rules (series matching a cohort query go
to a peer), the dead letters (series that failed ``forward.max_attempts`` times, with
the error and when) with Retry and Drop, and the latest sends. The run page includes
``_run_send.html``: its form sends the run's DICOM results to a peer. Both go through
the API (``/api/flow/forwarding``, ``/api/dicom/send``), so its checks and audit apply.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Request, Response

from jip import errors
from jip.ui.admin import ADMIN, AdminUserDep, act, api_call, page, said
from jip.ui.admin_peers import _json_object
from jip.ui.api import Api, ApiError
from jip.ui.routes import CsrfField, PageRoute, UserDep, render
from jip.ui.session import check_csrf

FORWARDING = f"{ADMIN}/forwarding"
RECENT = 50

router = APIRouter(tags=["ui"], route_class=PageRoute, include_in_schema=False)


@router.get(FORWARDING)
async def forwarding_page(request: Request, user: AdminUserDep) -> Response:
    api = Api(request)
    items = await api.get("/api/flow/forwarding/items")
    return page(
        request,
        "admin_forwarding.html",
        rules=await api.get("/api/flow/forwarding/rules"),
        dead=[i for i in items if i["state"] == "dead"],
        recent=[i for i in items if i["state"] != "dead"][:RECENT],
        peers=await api.get("/api/dicom/send/peers"),
    )


@router.post(FORWARDING)
async def create_rule(
    request: Request,
    user: AdminUserDep,
    name: Annotated[str, Form()],
    peer: Annotated[str, Form()],
    query: Annotated[str, Form()] = "{}",
    enabled: Annotated[bool, Form()] = False,
    csrf_token: CsrfField = "",
) -> Response:
    async def create(api: Api) -> Any:
        body = {
            "name": name,
            "peer": peer,
            "query": _json_object("query", query),
            "enabled": enabled,
        }
        return await api.post("/api/flow/forwarding/rules", json=body)

    return await act(
        request, csrf_token, FORWARDING, create, said(f"forwarding rule {name} created")
    )


@router.post(FORWARDING + "/rules/{rule_id}/{change}")
async def change_rule(
    request: Request, user: AdminUserDep, rule_id: int, change: str, csrf_token: CsrfField = ""
) -> Response:
    """Enable, disable or delete a rule."""
    path = ("flow", "forwarding", "rules", str(rule_id))
    if change in ("enable", "disable"):
        action = api_call("PATCH", *path, json={"enabled": change == "enable"})
    elif change == "delete":
        action = api_call("DELETE", *path)
    else:
        raise errors.NotFound(f"no action {change!r}: enable, disable or delete")
    done = said(f"forwarding rule {rule_id} {change}d")  # enabled, disabled, deleted
    return await act(request, csrf_token, FORWARDING, action, done)


@router.post(FORWARDING + "/items/{item_id}/{change}")
async def change_item(
    request: Request, user: AdminUserDep, item_id: int, change: str, csrf_token: CsrfField = ""
) -> Response:
    """Retry a dead letter (sent again at the forwarder's next pass) or drop it."""
    if change not in ("retry", "drop"):
        raise errors.NotFound(f"no action {change!r}: retry or drop")
    action = api_call("POST", "flow", "forwarding", "items", str(item_id), change)
    done = "queued again" if change == "retry" else "dropped"
    return await act(request, csrf_token, FORWARDING, action, said(f"series {done}"))


@router.post("/ui/runs/{run_id}/send")
async def send_run_results(
    request: Request,
    user: UserDep,
    run_id: str,
    peer: Annotated[str, Form()],
    csrf_token: CsrfField = "",
) -> Response:
    """Send the run's DICOM results to ``peer``; the page says what arrived."""
    request.state.ui_user = user
    check_csrf(request, csrf_token)
    api = Api(request)
    results = await api.get(f"/api/flow/runs/{quote(run_id)}/results")
    series = sorted({r["result_series_uid"] for r in results if r.get("result_series_uid")})
    outcome: dict[str, Any] | None = None
    problem = ""
    if not series:
        problem = "this run has no DICOM results to send"
    else:
        try:
            outcome = await api.post("/api/dicom/send", json={"peer": peer, "series": series})
        except ApiError as exc:
            problem = f"{exc.detail} (HTTP {exc.status})"
    return render(
        request,
        "send_result.html",
        status_code=200 if outcome else 400,
        run_id=run_id,
        peer=peer,
        outcome=outcome,
        problem=problem,
    )
