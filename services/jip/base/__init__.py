"""BASE: identity (the embedded OIDC issuer or Keycloak), users, projects and roles, audit.

What the room holds:

- ``auth``: bearer-token checks (the embedded issuer's key or Keycloak's JWKS), the
  :class:`CurrentUser` and their project scope; ``deps``: the FastAPI aliases
  (``CurrentUserDep``, ``AdminDep``, ``ProjectsDep``, ...) every service's routes take;
- ``issuer`` (the grants: authorization code with PKCE, password, refresh),
  ``refresh_tokens`` (token families), ``tokens`` (JWT minting), ``keys``, ``throttle``
  and ``issuer_routes`` (``/auth/*``, ``/.well-known/*``): the embedded OIDC issuer;
- ``ledger`` (the per-request checks that make tokens revocable), ``run_tokens`` (a
  workflow run's own token: ``Identity.issue_run_token`` / ``revoke_run_token``) and
  ``service_tokens`` (the rotating token `jip up` gives its workers);
- ``keycloak``: sets up the cluster shape's realm (`jip keycloak bootstrap`);
- ``users``, ``projects``, ``audit``, ``schema`` (their tables), ``routes``
  (``/api/users``, ``/api/projects``, ``/api/me``, ``/api/audit``) and ``identity`` (the
  bundle the Runtime holds; ``jip.backends.identity_for`` builds it).

Other services and the UI use only the names below (``from jip.base import X``), each
imported on first use (:func:`jip.lazy_exports`: a DICOM listener process needs
``now_utc``, not the token checks and FastAPI); the tables (``schema``) are registered
on import. The composition (runtime, backends, migrations, app, embedded, cli) may
reach the modules.
BASE may import only the core (``jip.config``, ``jip.db``, ``jip.errors``,
``jip.logs``, ``jip.api_types``), never another service. Its own modules import each
other directly, never through this package.
"""

from typing import TYPE_CHECKING

from jip import lazy_exports
from jip.base.schema import Project, ProjectRole, as_utc, now_utc  # registers the tables

if TYPE_CHECKING:
    from jip.base.audit import AuditAction, AuditFilter, AuditLog, AuditRecord
    from jip.base.auth import (
        ADMIN_ROLE,
        ANONYMOUS_ADMIN,
        PROJECT_GROUP_PREFIX,
        Authenticator,
        CurrentUser,
        JwksVerifier,
        LocalKeyVerifier,
        TokenVerifier,
        current_user,
        optional_user,
        project_scope,
        require_admin,
        require_project_role,
        require_token,
        user_from_claims,
    )
    from jip.base.deps import (
        AdminDep,
        AuditDep,
        ClientIpDep,
        CurrentUserDep,
        IdentityDep,
        IssuerDep,
        OptionalUserDep,
        ProjectsDep,
        UsersDep,
    )
    from jip.base.identity import Identity, site_url
    from jip.base.issuer import (
        CLI_CLIENT,
        WEB_CLIENT,
        AuthorizeRequest,
        Issuer,
        OAuthError,
        s256,
    )
    from jip.base.keys import SigningKeys
    from jip.base.ledger import TokenLedger
    from jip.base.projects import ProjectInfo, Projects, check_project_name
    from jip.base.run_tokens import RunTokens
    from jip.base.service_tokens import SERVICE_USERNAME, service_token
    from jip.base.users import UserInfo, Users, generate_password

_EXPORTS = {
    "jip.base.audit": ("AuditAction", "AuditFilter", "AuditLog", "AuditRecord"),
    "jip.base.auth": (
        "ADMIN_ROLE",
        "ANONYMOUS_ADMIN",
        "PROJECT_GROUP_PREFIX",
        "Authenticator",
        "CurrentUser",
        "JwksVerifier",
        "LocalKeyVerifier",
        "TokenVerifier",
        "current_user",
        "optional_user",
        "project_scope",
        "require_admin",
        "require_project_role",
        "require_token",
        "user_from_claims",
    ),
    "jip.base.deps": (
        "AdminDep",
        "AuditDep",
        "ClientIpDep",
        "CurrentUserDep",
        "IdentityDep",
        "IssuerDep",
        "OptionalUserDep",
        "ProjectsDep",
        "UsersDep",
    ),
    "jip.base.identity": ("Identity", "site_url"),
    "jip.base.issuer": (
        "CLI_CLIENT",
        "WEB_CLIENT",
        "AuthorizeRequest",
        "Issuer",
        "OAuthError",
        "s256",
    ),
    "jip.base.keys": ("SigningKeys",),
    "jip.base.ledger": ("TokenLedger",),
    "jip.base.projects": ("ProjectInfo", "Projects", "check_project_name"),
    "jip.base.run_tokens": ("RunTokens",),
    "jip.base.service_tokens": ("SERVICE_USERNAME", "service_token"),
    "jip.base.users": ("UserInfo", "Users", "generate_password"),
}

if not TYPE_CHECKING:  # the type checker reads the imports above
    __getattr__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "ADMIN_ROLE",
    "ANONYMOUS_ADMIN",
    "CLI_CLIENT",
    "PROJECT_GROUP_PREFIX",
    "SERVICE_USERNAME",
    "WEB_CLIENT",
    "AdminDep",
    "AuditAction",
    "AuditDep",
    "AuditFilter",
    "AuditLog",
    "AuditRecord",
    "Authenticator",
    "AuthorizeRequest",
    "ClientIpDep",
    "CurrentUser",
    "CurrentUserDep",
    "Identity",
    "IdentityDep",
    "Issuer",
    "IssuerDep",
    "JwksVerifier",
    "LocalKeyVerifier",
    "OAuthError",
    "OptionalUserDep",
    "Project",
    "ProjectInfo",
    "ProjectRole",
    "Projects",
    "ProjectsDep",
    "RunTokens",
    "SigningKeys",
    "TokenLedger",
    "TokenVerifier",
    "UserInfo",
    "Users",
    "UsersDep",
    "as_utc",
    "check_project_name",
    "current_user",
    "generate_password",
    "now_utc",
    "optional_user",
    "project_scope",
    "require_admin",
    "require_project_role",
    "require_token",
    "s256",
    "service_token",
    "site_url",
    "user_from_claims",
]
