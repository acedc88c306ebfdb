"""The site admin's federation pages under ``/ui/admin/federation``: the approval queue
(with exactly what each job would send) and the site's ``fed.*`` audit.

The policy and the trusted keys are in :mod:`.federation_policy`. The site's federation
has no HTTP API (`jip fed` works on the catalog in-process), so these pages call the
same functions as `jip fed queue|approve|reject` on the runtime's catalog engine, with
the signed-in admin as the approver; only site admins reach them
(:func:`jip.ui.admin.admin_user`). Each page says plainly when the site has not joined a
hub: nothing reaches the queue then, but the policy can be set beforehand.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Annotated, Any, TypeVar
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request, Response
from sqlalchemy import Engine

from jip import errors
from jip.federation import SiteJobState, decode_bytes, key_id
from jip.federation.site import JobBook, JobRecord, Policies, SiteFiles, approve, queue_view, reject
from jip.ui.admin import ADMIN, AUDIT_PAGE, AdminUserDep, error_message, flashed, page, said
from jip.ui.api import Api, ApiError
from jip.ui.routes import CsrfField, PageRoute
from jip.ui.session import check_csrf

FEDERATION = f"{ADMIN}/federation"
FED_AUDIT = f"{FEDERATION}/audit"
SECTIONS = (
    (FEDERATION, "Approval queue"),
    (f"{FEDERATION}/policy", "Policy"),
    (f"{FEDERATION}/keys", "Trusted keys"),
    (FED_AUDIT, "Audit"),
)

router = APIRouter(tags=["ui"], route_class=PageRoute, include_in_schema=False)
log = logging.getLogger(__name__)
T = TypeVar("T")


# -- what every federation page needs ----------------------------------------------------------
def engine_of(request: Request) -> Engine:
    engine: Engine = request.app.state.runtime.engine
    return engine


def hub_of(request: Request) -> dict[str, Any] | None:
    """hub.json of this site (``hub_url``, ``site_id``), or None when it has not joined."""
    files = SiteFiles.of(request.app.state.runtime.settings.data_dir)
    if not files.joined:
        return None
    try:
        return files.hub()
    except (errors.JipError, ValueError):  # a damaged hub.json: shown as not joined
        log.warning("federation: hub.json unreadable", extra={"path": str(files.hub_json)})
        return None


def fed_page(request: Request, template: str, **context: Any) -> Response:
    """An admin page of this section: its sub-navigation and the hub it has joined."""
    return page(request, template, sections=SECTIONS, hub=hub_of(request), **context)


def client_ip(request: Request) -> str:
    return request.client.host if request.client else ""


def decided(
    request: Request,
    csrf_token: str,
    back: str,
    action: Callable[[], T],
    done: Callable[[T], str],
) -> Response:
    """Run a form's in-process ``action`` and go back to ``back`` saying how it went
    (``done`` words its result; an error's message is shown instead)."""
    check_csrf(request, csrf_token)
    try:
        result = action()
    except errors.JipError as exc:
        return flashed(request, back, str(exc), error=True)
    return flashed(request, back, done(result))


# -- the approval queue ------------------------------------------------------------------------
@router.get(FEDERATION)
def queue_page(request: Request, user: AdminUserDep) -> Response:
    """Jobs waiting for a person, each with exactly what would leave; then every job."""
    engine = engine_of(request)
    policies = Policies(engine)
    policy, trusted = policies.get(), policies.trusted()
    names = {key["key_id"]: key["name"] for key in policies.trusted_list()}
    records = [record for record in JobBook(engine).all() if record.round == 1]
    waiting = [
        waiting_view(record, names, trusted, policy.job_refusal(record.job, trusted))
        for record in records
        if record.state is SiteJobState.QUEUED
    ]
    return fed_page(
        request,
        "admin_federation.html",
        waiting=waiting,
        jobs=[job_row(record) for record in reversed(records)],
        approval=policy.approval.value,
    )


def waiting_view(
    record: JobRecord, names: dict[str, str], trusted: dict[str, bytes], refusal: str | None
) -> dict[str, Any]:
    """``queue_view`` and what the approver checks besides: the researcher's key id, the
    signer's trusted name and whether its signature holds, and what the policy says."""
    view = queue_view(record)
    job = record.job
    view["researcher_key_id"] = key_id(decode_bytes(job.researcher_key, "researcher_key", 32))
    signer = view["workflow"]["signer"]
    try:
        job.workflow.verify(trusted)
        signature = ""
    except errors.JipError as exc:
        signature = str(exc)
    view["workflow"].update(trusted_as=names.get(signer), signature_problem=signature)
    view["cohort_json"] = json.dumps(view["cohort"]["query"], indent=2, sort_keys=True)
    view["parameters_json"] = json.dumps(view["parameters"], sort_keys=True)
    view["refusal"] = refusal
    return view


def job_row(record: JobRecord) -> dict[str, Any]:
    job = record.job
    return {
        "job_id": record.job_id,
        "state": record.state.value,
        "project": job.project,
        "workflow": job.workflow.name,
        "outputs": ", ".join(o.name for o in job.outputs),
        "reason": record.reason or "",
        "decided_by": record.decided_by or "",
    }


@router.post(FEDERATION + "/jobs/{job_id}/approve")
def approve_job(
    request: Request, user: AdminUserDep, job_id: str, csrf_token: CsrfField = ""
) -> Response:
    """As `jip fed approve JOB`: the agent runs it on its next cycle."""

    def run() -> JobRecord:
        return approve(engine_of(request), job_id, user.username)

    done = said(f"job {job_id} approved: the agent runs it on its next cycle")
    return decided(request, csrf_token, FEDERATION, run, done)


@router.post(FEDERATION + "/jobs/{job_id}/reject")
def reject_job(
    request: Request,
    user: AdminUserDep,
    job_id: str,
    reason: Annotated[str, Form()] = "",
    csrf_token: CsrfField = "",
) -> Response:
    """As `jip fed reject JOB --reason R`: the hub (and so the researcher) is told why."""

    def run() -> JobRecord:
        if not reason.strip():
            raise errors.Invalid(
                f"job {job_id}: give a reason to reject it (the researcher sees it)"
            )
        return reject(engine_of(request), job_id, user.username, reason.strip())

    return decided(request, csrf_token, FEDERATION, run, said(f"job {job_id} rejected"))


# -- the federation audit ----------------------------------------------------------------------
@router.get(FED_AUDIT)
async def audit_page(
    request: Request,
    user: AdminUserDep,
    before_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
) -> Response:
    """The site's ``fed.*`` entries, newest first, with the released bytes (size, sha256)."""
    params: dict[str, Any] = {"action": "fed.", "limit": AUDIT_PAGE}
    if before_id is not None:
        params["before_id"] = before_id
    try:
        entries, problem = await Api(request).get("/api/audit", params=params), ""
    except ApiError as exc:
        entries, problem = [], error_message(exc)
    older = None
    if len(entries) == AUDIT_PAGE:
        older = f"{FED_AUDIT}?" + urlencode({"before_id": entries[-1]["id"]})
    return fed_page(
        request,
        "admin_federation_audit.html",
        entries=[audit_row(entry) for entry in entries],
        problem=problem,
        older=older,
    )


def audit_row(entry: dict[str, Any]) -> dict[str, Any]:
    """An audit entry with its released bytes pulled out of the detail, when it has any."""
    detail = dict(entry.get("detail") or {})
    size, sha256 = detail.pop("size", None), detail.pop("sha256", None)
    return {**entry, "size": size, "sha256": sha256, "rest": detail}
