"""Typed dependencies of the BASE routes, and the caller for every other service.

Other services take ``user: CurrentUserDep`` and filter with
``jip.base.auth.project_scope(user)``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from jip.base.audit import AuditLog
from jip.base.auth import CurrentUser, current_user, optional_user, require_admin
from jip.base.identity import Identity
from jip.base.issuer import Issuer
from jip.base.projects import Projects
from jip.base.users import Users
from jip.errors import NotFound


def get_identity(request: Request) -> Identity:
    identity: Identity = request.app.state.runtime.identity
    return identity


def get_issuer(request: Request) -> Issuer:
    identity = get_identity(request)
    if identity.issuer is None:
        issuer_url = request.app.state.runtime.settings.auth.issuer_url
        raise NotFound(f"this site logs people in through {issuer_url}, not its own issuer")
    return identity.issuer


def get_users(request: Request) -> Users:
    return get_identity(request).users


def require_local_users(request: Request) -> None:
    """Local accounts exist only with the embedded issuer; Keycloak manages its own."""
    get_issuer(request)


def get_projects(request: Request) -> Projects:
    return get_identity(request).projects


def get_audit(request: Request) -> AuditLog:
    return get_identity(request).audit


def client_ip(request: Request) -> str:
    """The caller's address: the connection's peer, or what X-Forwarded-For says when
    that peer is one of ``http.trusted_proxies`` (resolved by the server before any
    route runs, see :func:`jip.embedded.http_server_config`; the UI reads the same
    ``request.client``). Never the header of an untrusted peer."""
    return request.client.host if request.client else ""


IdentityDep = Annotated[Identity, Depends(get_identity)]
IssuerDep = Annotated[Issuer, Depends(get_issuer)]
UsersDep = Annotated[Users, Depends(get_users)]
ProjectsDep = Annotated[Projects, Depends(get_projects)]
AuditDep = Annotated[AuditLog, Depends(get_audit)]
ClientIpDep = Annotated[str, Depends(client_ip)]
CurrentUserDep = Annotated[CurrentUser, Depends(current_user)]
OptionalUserDep = Annotated[CurrentUser | None, Depends(optional_user)]
AdminDep = Annotated[CurrentUser, Depends(require_admin)]
