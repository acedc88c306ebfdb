"""Who is calling: bearer-token validation, the current user and their project scope.

Every service validates the same JWT access tokens: signature against the issuer's keys
(JWKS), issuer, audience and expiry. The embedded shape checks against the key of the
built-in issuer (:mod:`jip.base.keys`); the cluster shape fetches Keycloak's JWKS with
PyJWT's ``PyJWKClient`` (``jip.backends.authenticator_for`` picks one). Both issue the same claims, which map onto one
:class:`CurrentUser`:

- ``preferred_username`` (else ``sub``): the username;
- ``realm_access.roles`` containing ``admin``: a site admin, who sees every project;
- ``groups`` entries ``/projects/<project>/<role>``: the caller's projects and roles.

A workflow run acts with a token of its own (:mod:`jip.base.run_tokens`), signed with
the site's key in both shapes: claim ``jip_run`` names the run, ``jip_projects`` its
projects; it makes a :class:`CurrentUser` with the researcher role in exactly those
projects, never an admin. Tokens signed with the site's key are also checked against the
database on every request (:mod:`jip.base.ledger`), so revocation is immediate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import jwt
from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from jip.base.keycloak_sessions import KeycloakSessions, userinfo_url
from jip.base.keys import SigningKeys
from jip.base.ledger import RUN_CLAIM, SERVICE_CLAIM, TokenLedger
from jip.base.schema import ProjectRole
from jip.errors import Forbidden, NotFound, Unauthorized, Unavailable

ADMIN_ROLE = "admin"
PROJECT_GROUP_PREFIX = "/projects/"
LEEWAY_S = 30  # clock skew tolerated between the issuer and this service
CLUSTER_ALGORITHMS = ["RS256", "PS256", "ES256"]

# Reached without a token: probes, metrics, the issuer's own endpoints and discovery.
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
PUBLIC_PREFIXES = ("/auth/", "/.well-known/")
# The web UI's pages check their own cookie session instead (jip.ui.session).
UI_PATHS = frozenset({"/"})
UI_PREFIXES = ("/ui/",)


@dataclass(frozen=True)
class CurrentUser:
    username: str
    is_admin: bool = False
    projects: Mapping[str, ProjectRole] = field(default_factory=dict)
    # Set for a workflow run's token: the run it acts for and who started the run.
    run_id: str | None = None
    started_by: str | None = None

    def role_in(self, project: str) -> ProjectRole | None:
        return self.projects.get(project)

    def has_role(self, project: str, at_least: ProjectRole) -> bool:
        """Admins have every role in every project."""
        if self.is_admin:
            return True
        role = self.role_in(project)
        return role is not None and role.at_least(at_least)


# With ``auth.enabled = false`` (tests, a laptop demo) every caller is this admin.
ANONYMOUS_ADMIN = CurrentUser(username="anonymous", is_admin=True)


def project_scope(user: CurrentUser) -> set[str] | None:
    """The projects whose data ``user`` may see; None means all of them (admins).

    Services filter every query with it: ``None`` adds no condition, a set adds
    ``project IN (...)`` (an empty set matches nothing).
    """
    return None if user.is_admin else set(user.projects)


def require_project_role(user: CurrentUser, project: str, at_least: ProjectRole) -> None:
    """Raise NotFound outside the caller's projects, Forbidden below ``at_least``."""
    if user.has_role(project, at_least):
        return
    if user.role_in(project) is None:
        raise NotFound(f"no project {project!r}")
    raise Forbidden(f"needs the {at_least.value} role in project {project!r}")


RUN_PROJECTS_CLAIM = "jip_projects"
RUN_STARTED_BY_CLAIM = "jip_started_by"


def user_from_claims(claims: Mapping[str, Any]) -> CurrentUser:
    if RUN_CLAIM in claims:
        return run_user_from_claims(claims)
    username = claims.get("preferred_username") or claims.get("sub")
    if not isinstance(username, str) or not username:
        raise Unauthorized("token names no user (preferred_username or sub)")
    realm_access = claims.get("realm_access")
    roles = realm_access.get("roles", []) if isinstance(realm_access, Mapping) else []
    projects: dict[str, ProjectRole] = {}
    groups = claims.get("groups", [])
    for group in groups if isinstance(groups, list) else []:
        parsed = _project_group(group)
        if parsed is None:
            continue
        project, role = parsed
        if project not in projects or role.at_least(projects[project]):
            projects[project] = role
    return CurrentUser(username=username, is_admin=ADMIN_ROLE in roles, projects=projects)


def run_user_from_claims(claims: Mapping[str, Any]) -> CurrentUser:
    """A run's token: researcher in exactly its projects, never an admin."""
    run_id = claims.get(RUN_CLAIM)
    projects = claims.get(RUN_PROJECTS_CLAIM)
    if not isinstance(run_id, str) or not run_id or not isinstance(projects, list):
        raise Unauthorized("invalid run token: jip_run and jip_projects are required")
    started_by = claims.get(RUN_STARTED_BY_CLAIM)
    return CurrentUser(
        username=f"run:{run_id}",
        is_admin=False,
        projects={str(p): ProjectRole.RESEARCHER for p in projects if isinstance(p, str)},
        run_id=run_id,
        started_by=started_by if isinstance(started_by, str) else None,
    )


def project_groups(projects: Mapping[str, ProjectRole]) -> list[str]:
    """The ``groups`` claim for these memberships (the inverse of :func:`user_from_claims`)."""
    return [f"{PROJECT_GROUP_PREFIX}{name}/{role.value}" for name, role in sorted(projects.items())]


def _project_group(group: object) -> tuple[str, ProjectRole] | None:
    if not isinstance(group, str) or not group.startswith(PROJECT_GROUP_PREFIX):
        return None
    project, _, role = group[len(PROJECT_GROUP_PREFIX) :].partition("/")
    try:
        return (project, ProjectRole(role)) if project else None
    except ValueError:
        return None


class TokenVerifier(Protocol):
    """Checks an access token and returns its claims, or raises Unauthorized."""

    def verify(self, token: str) -> dict[str, Any]: ...


def decode_access_token(
    token: str, key: Any, *, issuer: str, audience: str, algorithms: list[str]
) -> dict[str, Any]:
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=algorithms,
            audience=audience,
            issuer=issuer,
            leeway=LEEWAY_S,
            options={"require": ["exp", "iat", "iss", "aud", "sub"]},
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized("token expired: log in again or refresh it") from None
    except jwt.InvalidTokenError as exc:
        raise Unauthorized(f"invalid token: {exc}") from None
    # ID tokens carry the same signature, issuer and (for the web client) audience;
    # Keycloak and the embedded issuer mark access tokens with typ "Bearer".
    if claims.get("typ", "Bearer") != "Bearer":
        raise Unauthorized(f"invalid token: a {claims.get('typ')!r} token is no access token")
    return claims


class LocalKeyVerifier:
    """The embedded shape: tokens of the built-in issuer, checked against its own key."""

    def __init__(self, keys: SigningKeys, *, issuer: str, audience: str) -> None:
        self.keys = keys
        self.issuer = issuer
        self.audience = audience

    def verify(self, token: str) -> dict[str, Any]:
        return decode_access_token(
            token,
            self.keys.public_key,
            issuer=self.issuer,
            audience=self.audience,
            algorithms=["RS256"],
        )


class JwksVerifier:
    """The cluster shape: tokens of an external issuer (Keycloak), keys from its JWKS.

    The JWKS URL comes from ``auth.jwks_url`` or the issuer's discovery document; keys
    are cached, and a token with an unknown ``kid`` refetches them (key rotation). A
    token whose signature holds is then checked against its Keycloak session
    (``sessions``, :mod:`jip.base.keycloak_sessions`; by default every 30 s), so a
    disabled user or a lost group counts within that window, not at expiry.
    """

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        jwks_url: str | None = None,
        sessions: KeycloakSessions | None = None,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.jwks_url = jwks_url
        self.sessions = sessions or KeycloakSessions(userinfo_url(issuer, jwks_url))
        self._client: jwt.PyJWKClient | None = None

    def verify(self, token: str) -> dict[str, Any]:
        try:
            signing_key = self.client().get_signing_key_from_jwt(token)
        except jwt.PyJWKClientConnectionError as exc:
            raise Unavailable(
                f"cannot fetch the issuer's keys from {self.jwks_url}: {exc}"
            ) from None
        except (jwt.PyJWKClientError, jwt.InvalidTokenError) as exc:
            raise Unauthorized(f"invalid token: {exc}") from None
        claims = decode_access_token(
            token,
            signing_key.key,
            issuer=self.issuer,
            audience=self.audience,
            algorithms=CLUSTER_ALGORITHMS,
        )
        return self.sessions.check(token, claims)

    def client(self) -> jwt.PyJWKClient:
        if self._client is None:
            self.jwks_url = self.jwks_url or self._discover_jwks_url()
            self._client = jwt.PyJWKClient(self.jwks_url, cache_keys=True, lifespan=300, timeout=10)
        return self._client

    def _discover_jwks_url(self) -> str:
        url = f"{self.issuer.rstrip('/')}/.well-known/openid-configuration"
        try:
            response = httpx.get(url, timeout=10)
            response.raise_for_status()
            return str(response.json()["jwks_uri"])
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            raise Unavailable(f"cannot read the issuer's discovery document {url}: {exc}") from None


class Authenticator:
    """Turns the bearer token of a request into a :class:`CurrentUser`.

    ``site`` checks tokens signed with the site's own key (every token in the embedded
    shape; run tokens beside Keycloak's in the cluster shape), and ``ledger`` whether
    such a token still holds; ``local_users`` says the site's issuer logs people in.
    """

    def __init__(
        self,
        *,
        enabled: bool,
        verifier: TokenVerifier,
        site: LocalKeyVerifier | None = None,
        ledger: TokenLedger | None = None,
        local_users: bool = False,
    ) -> None:
        self.enabled = enabled
        self.verifier = verifier
        self.site = site
        self.ledger = ledger
        self.local_users = local_users

    def authenticate(self, token: str | None) -> CurrentUser:
        if not self.enabled:
            return ANONYMOUS_ADMIN
        if not token:
            raise Unauthorized("missing bearer token: log in (`jip login`) and send it")
        return user_from_claims(self.claims(token))

    def claims(self, token: str) -> dict[str, Any]:
        """The claims of a valid token that still holds; Unauthorized otherwise."""
        if self.site is not None and (
            self.site is self.verifier or _unverified_issuer(token) == self.site.issuer
        ):
            claims = self.site.verify(token)
            if self.ledger is not None:
                self.ledger.check_site_token(claims, local_users=self.local_users)
            return claims
        claims = self.verifier.verify(token)
        if self.site is not None and (RUN_CLAIM in claims or SERVICE_CLAIM in claims):
            raise Unauthorized("invalid token: run and service tokens come from this site only")
        return claims


def _unverified_issuer(token: str) -> object:
    try:
        return jwt.decode(token, options={"verify_signature": False}).get("iss")
    except jwt.InvalidTokenError:
        return None


# -- FastAPI dependencies ----------------------------------------------------------------
bearer = HTTPBearer(auto_error=False, description="An access token of this site's issuer.")


def _authenticator(request: Request) -> Authenticator:
    authenticator: Authenticator = request.app.state.runtime.identity.authenticator
    return authenticator


def current_user(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Security(bearer),
) -> CurrentUser:
    """The caller; 401 (``WWW-Authenticate: Bearer``) without a valid token."""
    cached = getattr(request.state, "jip_user", None)
    if isinstance(cached, CurrentUser):
        return cached
    user = _authenticator(request).authenticate(credentials.credentials if credentials else None)
    request.state.jip_user = user
    return user


def optional_user(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Security(bearer),
) -> CurrentUser | None:
    """The caller if a valid token came with the request, else None (public endpoints
    such as logout, where an expired token must not stand in the way)."""
    if credentials is None:
        return None
    try:
        return current_user(request, credentials)
    except Unauthorized:
        return None


def require_admin(user: CurrentUser = Depends(current_user)) -> CurrentUser:
    if not user.is_admin:
        raise Forbidden("only site admins may do this")
    return user


def is_public(path: str) -> bool:
    """Whether the bearer-token guard lets ``path`` through (UI pages check the session)."""
    return is_ui(path) or path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def is_ui(path: str) -> bool:
    return path in UI_PATHS or path.startswith(UI_PREFIXES)


def require_token(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Security(bearer),
) -> None:
    """App-wide guard: every route needs a valid token unless it is public.

    Installed once on the application (``FastAPI(dependencies=...)``), so routers that
    later services add are protected without doing anything (deny by default).
    """
    route = request.scope.get("route")
    path = getattr(route, "path", None) or request.url.path
    if is_public(path):
        return
    current_user(request, credentials)
