"""The cluster shape's Keycloak: set up its realm, and the web UI's calls to its login.

``bootstrap_realm`` creates (and, run again, leaves in place or brings up to date) what
JIP expects, so that Keycloak's tokens look like the embedded issuer's:

- the realm named by ``auth.issuer_url`` (``…/realms/<realm>``; ``jip`` when unset);
- realm roles ``admin``, ``owner``, ``researcher``, ``viewer``;
- the public client ``jip`` (web UI: authorization code with PKCE S256) and the public
  client ``jip-cli`` (password grant and loopback redirects for ``jip login``), both with
  an audience mapper (``aud`` = ``auth.audience``), a ``groups`` mapper (full paths) and
  the realm roles in userinfo (what :mod:`jip.base.keycloak_sessions` rechecks);
- a group ``/projects/<project>`` per project with subgroups ``owner``, ``researcher``
  and ``viewer``, each granting the realm role of its name. Membership of
  ``/projects/lung/researcher`` appears in the token as that group path, which
  :func:`jip.base.auth.user_from_claims` reads as the researcher role in project lung.

:class:`KeycloakLogin` is the relying party's side of the web login (authorization
code with PKCE, refresh, logout) against the realm's endpoints. Errors of Keycloak's
admin API become :mod:`jip.errors` types whose messages say what to do next.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

from keycloak import KeycloakAdmin, KeycloakOpenID
from keycloak.exceptions import KeycloakConnectionError, KeycloakError

from jip.base.auth import ADMIN_ROLE, PROJECT_GROUP_PREFIX
from jip.base.identity import site_url
from jip.base.issuer import CLI_CLIENT, WEB_CLIENT
from jip.base.schema import ProjectRole
from jip.config import Settings
from jip.errors import Forbidden, Invalid, Unauthorized, Unavailable

DEFAULT_REALM = "jip"
PROJECTS_GROUP = PROJECT_GROUP_PREFIX.strip("/")
ROLE_DESCRIPTIONS = {
    ADMIN_ROLE: "Site admin: manages users and projects, sees every project",
    ProjectRole.OWNER.value: "Manages a project and its members",
    ProjectRole.RESEARCHER.value: "Searches, runs workflows and saves cohorts in a project",
    ProjectRole.VIEWER.value: "Reads a project's data and results",
}
TIMEOUT_S = 20

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclass
class RealmSetup:
    """What ``bootstrap_realm`` made sure exists, and what of it it had to create."""

    realm: str
    roles: list[str] = field(default_factory=list)
    clients: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)


def realm_name(settings: Settings) -> str:
    """The realm of ``auth.issuer_url`` (``https://kc/realms/<realm>``), else ``jip``."""
    if not settings.auth.issuer_url:
        return DEFAULT_REALM
    parts = urlsplit(settings.auth.issuer_url).path.rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2] == "realms" and parts[-1]:
        return parts[-1]
    return DEFAULT_REALM


def server_url(issuer_url: str) -> str:
    """Keycloak's base URL from a realm's issuer URL (``…/realms/<realm>`` cut off)."""
    base, marker, _realm = issuer_url.rstrip("/").rpartition("/realms/")
    if not marker:
        raise Invalid(
            f"auth.issuer_url {issuer_url!r} is no Keycloak realm URL: "
            "set it to https://<keycloak>/realms/<realm>"
        )
    return base


@contextlib.contextmanager
def admin_errors(admin_url: str, admin_user: str) -> Iterator[None]:
    """Keycloak's admin API errors as :mod:`jip.errors`, saying what to do next."""
    try:
        yield
    except KeycloakConnectionError as exc:
        raise Unavailable(
            f"cannot reach Keycloak at {admin_url} ({exc}): check --admin-url (Keycloak's "
            "base URL, without /realms/...) and that the server is up"
        ) from None
    except KeycloakError as exc:
        code = exc.response_code
        body = exc.error_message
        text = body.decode(errors="replace") if isinstance(body, bytes) else str(body)
        if code == 401 or (code == 400 and "invalid_grant" in text):
            raise Unauthorized(
                f"Keycloak at {admin_url} refused the login of {admin_user!r} to the master "
                "realm: check --admin-user and --admin-password (the account made at "
                "Keycloak's first start, KC_BOOTSTRAP_ADMIN_USERNAME)"
            ) from None
        if code == 403:
            raise Forbidden(
                f"{admin_user!r} may not manage realms at {admin_url}: use an admin of the "
                "master realm"
            ) from None
        if code == 404:
            raise Unavailable(
                f"no Keycloak admin API at {admin_url} (404): give Keycloak's base URL, "
                "without /realms/... or /admin"
            ) from None
        raise Unavailable(f"Keycloak at {admin_url} answered {code}: {text}") from None


def bootstrap_realm(
    settings: Settings,
    admin_url: str,
    admin_user: str,
    admin_password: str,
    *,
    projects: Iterable[str],
    progress: Progress | None = None,
) -> RealmSetup:
    """Create the realm, roles, clients and project groups; existing ones are kept.

    ``admin_user`` logs in to the ``master`` realm at ``admin_url``. ``projects`` are the
    names to make groups for (`jip keycloak bootstrap` passes those of the site's
    catalog). ``progress`` gets one line per step. The clients' redirect URIs and
    mappers are brought up to date when they exist already (a new ``auth.public_url``).
    """
    say = progress or (lambda _line: None)
    realm = realm_name(settings)
    setup = RealmSetup(realm=realm)
    admin = KeycloakAdmin(
        server_url=admin_url,
        username=admin_user,
        password=admin_password,
        realm_name=realm,
        user_realm_name="master",
        timeout=TIMEOUT_S,
    )
    with admin_errors(admin_url, admin_user):
        if realm in {r["realm"] for r in admin.get_realms()}:
            say(f"realm {realm}: exists, kept")
        else:
            admin.create_realm(realm_payload(settings, realm))
            setup.created.append(f"realm {realm}")
            say(f"realm {realm}: created")
        admin.change_current_realm(realm)
        _roles(admin, setup, say)
        for payload in (web_client_payload(settings), cli_client_payload(settings)):
            _client(admin, payload, setup, say)
        parent = _group(admin, f"/{PROJECTS_GROUP}", parent=None, setup=setup)
        for project in sorted(set(projects)):
            project_id = _group(admin, f"/{PROJECTS_GROUP}/{project}", parent=parent, setup=setup)
            for role in ProjectRole:
                path = f"/{PROJECTS_GROUP}/{project}/{role.value}"
                role_group = _group(admin, path, parent=project_id, setup=setup)
                admin.assign_group_realm_roles(role_group, [admin.get_realm_role(role.value)])
                setup.groups.append(path)
            say(f"project {project}: groups {', '.join(r.value for r in ProjectRole)}")
    return setup


def _roles(admin: KeycloakAdmin, setup: RealmSetup, say: Progress) -> None:
    existing = {role["name"] for role in admin.get_realm_roles(brief_representation=True)}
    for role, description in ROLE_DESCRIPTIONS.items():
        if role not in existing:
            admin.create_realm_role({"name": role, "description": description})
            setup.created.append(f"role {role}")
        setup.roles.append(role)
    say(f"realm roles: {', '.join(setup.roles)}")


def _client(
    admin: KeycloakAdmin, payload: dict[str, Any], setup: RealmSetup, say: Progress
) -> None:
    """Create the client, or bring an existing one's settings and mappers up to date."""
    client_id = payload["clientId"]
    setup.clients.append(client_id)
    existing = admin.get_client_id(client_id)
    if existing is None:
        admin.create_client(payload)
        setup.created.append(f"client {client_id}")
        say(f"client {client_id}: created")
        return
    mappers = payload["protocolMappers"]
    # Mappers are kept apart: a client's update leaves them alone.
    admin.update_client(existing, {k: v for k, v in payload.items() if k != "protocolMappers"})
    have = {m["name"] for m in admin.get_mappers_from_client(existing)}
    for mapper in mappers:
        if mapper["name"] not in have:
            admin.add_mapper_to_client(existing, mapper)
    say(f"client {client_id}: exists, settings updated")


def _group(admin: KeycloakAdmin, path: str, *, parent: str | None, setup: RealmSetup) -> str:
    """The id of the group at ``path``, created under ``parent`` if missing."""
    created = admin.create_group({"name": path.rsplit("/", 1)[-1]}, parent=parent, skip_exists=True)
    if created:
        setup.created.append(f"group {path}")
        return str(created)
    return str(admin.get_group_by_path(path)["id"])  # it existed already


def realm_payload(settings: Settings, realm: str) -> dict[str, Any]:
    return {
        "realm": realm,
        "displayName": "JIP",
        "enabled": True,
        "sslRequired": "external",
        "registrationAllowed": False,
        "bruteForceProtected": True,
        "failureFactor": settings.auth.login_max_failures,
        "accessTokenLifespan": settings.auth.access_token_ttl_s,
        "ssoSessionIdleTimeout": settings.auth.refresh_token_ttl_s,
        "revokeRefreshToken": True,  # rotation, as the embedded issuer does
        "refreshTokenMaxReuse": 0,
    }


def web_client_payload(settings: Settings) -> dict[str, Any]:
    site = site_url(settings)
    return {
        "clientId": WEB_CLIENT,
        "name": "JIP web",
        "enabled": True,
        "protocol": "openid-connect",
        "publicClient": True,
        "standardFlowEnabled": True,
        "directAccessGrantsEnabled": False,
        "implicitFlowEnabled": False,
        "rootUrl": site,
        "redirectUris": [f"{site}/*", *settings.auth.redirect_uris],
        "webOrigins": [site],
        "attributes": {
            "pkce.code.challenge.method": "S256",
            "post.logout.redirect.uris": f"{site}/*",
        },
        "protocolMappers": _mappers(settings),
    }


def cli_client_payload(settings: Settings) -> dict[str, Any]:
    return {
        "clientId": CLI_CLIENT,
        "name": "JIP command line",
        "enabled": True,
        "protocol": "openid-connect",
        "publicClient": True,
        "standardFlowEnabled": True,
        "directAccessGrantsEnabled": True,  # `jip login` asks for username and password
        "implicitFlowEnabled": False,
        # Loopback redirects for a browser login from the CLI (RFC 8252 §7.3).
        "redirectUris": ["http://127.0.0.1/*", "http://localhost/*"],
        "attributes": {
            "pkce.code.challenge.method": "S256",
            "oauth2.device.authorization.grant.enabled": "true",
        },
        "protocolMappers": _mappers(settings),
    }


def _mappers(settings: Settings) -> list[dict[str, Any]]:
    return [
        {
            "name": "jip-audience",
            "protocol": "openid-connect",
            "protocolMapper": "oidc-audience-mapper",
            "config": {
                "included.custom.audience": settings.auth.audience,
                "access.token.claim": "true",
                "id.token.claim": "false",
            },
        },
        {
            "name": "groups",
            "protocol": "openid-connect",
            "protocolMapper": "oidc-group-membership-mapper",
            "config": {
                "claim.name": "groups",
                "full.path": "true",
                "access.token.claim": "true",
                "id.token.claim": "true",
                "userinfo.token.claim": "true",
            },
        },
        {
            # Keycloak's own realm-role mapper fills access tokens only; userinfo needs
            # the roles too, because the session check reads them fresh from there.
            "name": "jip-realm-roles-userinfo",
            "protocol": "openid-connect",
            "protocolMapper": "oidc-usermodel-realm-role-mapper",
            "config": {
                "claim.name": "realm_access.roles",
                "multivalued": "true",
                "jsonType.label": "String",
                "access.token.claim": "false",
                "id.token.claim": "false",
                "userinfo.token.claim": "true",
            },
        },
    ]


class KeycloakLogin:
    """The web UI's side of a login through the realm of ``auth.issuer_url``.

    The browser goes to Keycloak's own login page (:meth:`authorize_url`); the callback
    trades the code for tokens (:meth:`code_grant`), an expired session is renewed with
    the refresh token (:meth:`refresh_grant`), and logout ends Keycloak's session.
    Keycloak's refusals (a disabled user, a revoked or reused refresh token) become
    Unauthorized; an unreachable server, Unavailable.
    """

    def __init__(self, settings: Settings, *, client_id: str = WEB_CLIENT) -> None:
        issuer = settings.auth.issuer_url
        if not issuer:
            raise Invalid("auth.issuer_url is unset: this site logs people in itself")
        self.issuer = issuer.rstrip("/")
        self.openid = KeycloakOpenID(
            server_url=server_url(issuer),
            realm_name=realm_name(settings),
            client_id=client_id,
            timeout=TIMEOUT_S,
        )

    def authorize_url(self, *, redirect_uri: str, state: str, code_challenge: str) -> str:
        return str(
            self.openid.auth_url(
                redirect_uri=redirect_uri,
                scope="openid profile",
                state=state,
                code_challenge=code_challenge,
                code_challenge_method="S256",
            )
        )

    def code_grant(self, code: str, *, redirect_uri: str, code_verifier: str) -> dict[str, Any]:
        with _login_errors("the login"):
            return self.openid.token(
                grant_type="authorization_code",
                code=code,
                redirect_uri=redirect_uri,
                code_verifier=code_verifier,
            )

    def refresh_grant(self, refresh_token: str) -> dict[str, Any]:
        with _login_errors("the session's renewal"):
            return self.openid.refresh_token(refresh_token)

    def end_session_url(self, *, id_token: str, post_logout_redirect_uri: str) -> str:
        """Keycloak's RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0 §2): it
        ends the browser's session at Keycloak, then sends the browser back."""
        query = urlencode(
            {
                "client_id": self.openid.client_id,
                "id_token_hint": id_token,
                "post_logout_redirect_uri": post_logout_redirect_uri,
            }
        )
        return f"{self.issuer}/protocol/openid-connect/logout?{query}"

    def logout(self, refresh_token: str) -> None:
        """End Keycloak's session of ``refresh_token``; one that ended already is no error."""
        try:
            self.openid.logout(refresh_token)
        except KeycloakError as exc:  # the cookies go either way; Keycloak's session may stay
            log.warning("Keycloak did not end the session: %s", exc)


@contextlib.contextmanager
def _login_errors(what: str) -> Iterator[None]:
    try:
        yield
    except KeycloakConnectionError as exc:
        raise Unavailable(f"cannot reach Keycloak for {what}: {exc}") from None
    except KeycloakError as exc:
        body = exc.error_message
        text = body.decode(errors="replace") if isinstance(body, bytes) else str(body)
        raise Unauthorized(f"Keycloak refused {what} ({text}): log in again") from None
