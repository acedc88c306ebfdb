"""The site admin's pages for the federation policy and the trusted workflow signing keys,
under ``/ui/admin/federation``.

They do what `jip fed policy set` and `jip fed trust add` do, through the same
:class:`~jip.federation.site.Policies`, and record the same ``fed.*`` audit entries
under the signed-in admin. The policy form is checked field by field here first, so a
mistake comes back on the form with the field's name and what to enter, the typed
values kept; removing a key is offered too (`Policies.distrust`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request, Response

from jip import errors
from jip.base import AuditLog
from jip.federation import OutputKind
from jip.federation.site import Approval, Policies
from jip.ui.admin import AdminUserDep, flashed, said
from jip.ui.federation_admin import FEDERATION, client_ip, decided, engine_of, fed_page
from jip.ui.routes import CsrfField, PageRoute
from jip.ui.session import check_csrf

POLICY = f"{FEDERATION}/policy"
KEYS = f"{FEDERATION}/keys"
LIMITS = {"min_cohort_size": "Minimum cohort size", "min_cell_count": "Minimum cell count"}

router = APIRouter(tags=["ui"], route_class=PageRoute, include_in_schema=False)


# -- the policy --------------------------------------------------------------------------------
def _site_projects(request: Request) -> list[str]:
    names: list[str] = request.app.state.runtime.identity.projects.names()
    return sorted(names)


def _policy_page(
    request: Request, form: dict[str, Any], problems: list[str], status_code: int = 200
) -> Response:
    known = _site_projects(request)
    listed = sorted(set(known) | set(form["projects"]))
    response = fed_page(
        request,
        "admin_federation_policy.html",
        form=form,
        problems=problems,
        projects=[(name, name in known) for name in listed],
        approvals=[a.value for a in Approval],
        kinds=[k.value for k in OutputKind],
    )
    response.status_code = status_code
    return response


@router.get(POLICY)
def policy_page(request: Request, user: AdminUserDep) -> Response:
    current = Policies(engine_of(request)).get().model_dump(mode="json")
    return _policy_page(request, current, [])


def policy_problems(form: dict[str, Any]) -> list[str]:
    """What is wrong with the submitted policy form, each naming the field and the fix."""
    problems = []
    if form["approval"] not in {a.value for a in Approval}:
        problems.append(f"Approval: choose manual or automatic (not {form['approval']!r})")
    for key, label in LIMITS.items():
        text = str(form[key]).strip()
        if not text.isdigit() or int(text) < 1:
            problems.append(f"{label}: enter a whole number of 1 or more (not {text!r})")
    kinds = {k.value for k in OutputKind}
    unknown = [kind for kind in form["allowed_outputs"] if kind not in kinds]
    if unknown:
        problems.append(
            f"Allowed outputs: {', '.join(unknown)} is no output kind ({', '.join(sorted(kinds))})"
        )
    return problems


@router.post(POLICY)
def set_policy(
    request: Request,
    user: AdminUserDep,
    approval: Annotated[str, Form()] = "",
    min_cohort_size: Annotated[str, Form()] = "",
    min_cell_count: Annotated[str, Form()] = "",
    projects: Annotated[list[str] | None, Form()] = None,
    allowed_outputs: Annotated[list[str] | None, Form()] = None,
    csrf_token: CsrfField = "",
) -> Response:
    """As `jip fed policy set`: the whole policy from the form (nothing ticked: none)."""
    check_csrf(request, csrf_token)
    form = {
        "projects": [p.strip() for p in projects or [] if p.strip()],
        "approval": approval.strip(),
        "min_cohort_size": min_cohort_size.strip(),
        "min_cell_count": min_cell_count.strip(),
        "allowed_outputs": list(allowed_outputs or []),
    }
    problems = policy_problems(form)
    if not problems:
        engine = engine_of(request)
        changes: dict[str, str] = {
            key: ",".join(value) if isinstance(value, list) else str(value)
            for key, value in form.items()
        }
        try:
            document = Policies(engine).set(changes).model_dump(mode="json")
        except errors.JipError as exc:
            problems.append(str(exc))
        else:
            AuditLog(engine).record(
                "fed.policy.set",
                username=user.username,
                detail=document,
                client_ip=client_ip(request),
            )
            return flashed(request, POLICY, "policy saved")
    return _policy_page(request, form, problems, 400)


# -- trusted keys ------------------------------------------------------------------------------
@router.get(KEYS)
def keys_page(request: Request, user: AdminUserDep) -> Response:
    return fed_page(
        request, "admin_federation_keys.html", keys=Policies(engine_of(request)).trusted_list()
    )


@router.post(KEYS)
def trust_key(
    request: Request,
    user: AdminUserDep,
    name: Annotated[str, Form()] = "",
    public_key: Annotated[str, Form()] = "",
    csrf_token: CsrfField = "",
) -> Response:
    """As `jip fed trust add NAME KEY`: run workflows signed by this Ed25519 key."""
    name = name.strip()

    def run() -> str:
        if not name or len(name) > 64:
            raise errors.Invalid("Name: give the key a name of 1 to 64 characters")
        engine = engine_of(request)
        kid = Policies(engine).trust(name, public_key)
        AuditLog(engine).record(
            "fed.trust.add",
            username=user.username,
            target=name,
            detail={"key_id": kid},
            client_ip=client_ip(request),
        )
        return kid

    return decided(request, csrf_token, KEYS, run, lambda kid: f"trusting {name} (key {kid})")


@router.post(KEYS + "/{name}/remove")
def distrust_key(
    request: Request, user: AdminUserDep, name: str, csrf_token: CsrfField = ""
) -> Response:
    """Stop trusting a key: jobs it signed are refused from the agent's next cycle."""

    def run() -> None:
        engine = engine_of(request)
        Policies(engine).distrust(name)
        AuditLog(engine).record(
            "fed.trust.remove", username=user.username, target=name, client_ip=client_ip(request)
        )

    return decided(request, csrf_token, KEYS, run, said(f"{name} is no longer trusted"))
