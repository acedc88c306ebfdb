"""Set up the Keycloak realm of the cluster shape so its tokens look like the embedded ones.

``bootstrap_realm`` creates (and, run again, leaves alone) what JIP expects:

- the realm named by ``auth.issuer_url`` (``…/realms/<realm>``; ``jip`` when unset);
- realm roles ``admin``, ``owner``, ``researcher``, ``viewer``;
- the public client ``jip`` (web UI: authorization code with PKCE S256) and the public
  client ``jip-cli`` (password grant and loopback redirects for ``jip login``), both with
  an audience mapper (``aud`` = ``auth.audience``) and a ``groups`` mapper (full paths);
- a group ``/projects/<project>`` per project with subgroups ``owner``, ``researcher``
  and ``viewer``, each granting the realm role of its name. Membership of
  ``/projects/lung/researcher`` appears in the token as that group path, which
  :func:`jip.base.auth.user_from_claims` reads as the researcher role in project lung.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from keycloak import KeycloakAdmin

from jip.base.auth import ADMIN_ROLE, PROJECT_GROUP_PREFIX
from jip.base.identity import site_url
from jip.base.issuer import CLI_CLIENT, WEB_CLIENT
from jip.base.schema import ProjectRole
from jip.config import Settings

DEFAULT_REALM = "jip"
PROJECTS_GROUP = PROJECT_GROUP_PREFIX.strip("/")
ROLE_DESCRIPTIONS = {
    ADMIN_ROLE: "Site admin: manages users and projects, sees every project",
    ProjectRole.OWNER.value: "Manages a project and its members",
    ProjectRole.RESEARCHER.value: "Searches, runs workflows and saves cohorts in a project",
    ProjectRole.VIEWER.value: "Reads a project's data and results",
}


@dataclass
class RealmSetup:
    """What ``bootstrap_realm`` made sure exists."""

    realm: str
    roles: list[str] = field(default_factory=list)
    clients: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)


def realm_name(settings: Settings) -> str:
    """The realm of ``auth.issuer_url`` (``https://kc/realms/<realm>``), else ``jip``."""
    if not settings.auth.issuer_url:
        return DEFAULT_REALM
    parts = urlsplit(settings.auth.issuer_url).path.rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2] == "realms" and parts[-1]:
        return parts[-1]
    return DEFAULT_REALM


def bootstrap_realm(
    settings: Settings,
    admin_url: str,
    admin_user: str,
    admin_password: str,
    *,
    projects: Iterable[str],
    admin: KeycloakAdmin | None = None,
) -> RealmSetup:
    """Create the realm, roles, clients and project groups; existing ones are kept.

    ``admin_user`` logs in to the ``master`` realm at ``admin_url``. ``projects`` are the
    names to make groups for (`jip keycloak bootstrap` passes those of the site's
    catalog). ``admin`` replaces the client (tests).
    """
    realm = realm_name(settings)
    if admin is None:
        admin = KeycloakAdmin(
            server_url=admin_url,
            username=admin_user,
            password=admin_password,
            realm_name=realm,
            user_realm_name="master",
        )
    setup = RealmSetup(realm=realm)
    admin.create_realm(realm_payload(settings, realm), skip_exists=True)
    admin.change_current_realm(realm)
    for role, description in ROLE_DESCRIPTIONS.items():
        admin.create_realm_role({"name": role, "description": description}, skip_exists=True)
        setup.roles.append(role)
    for payload in (web_client_payload(settings), cli_client_payload(settings)):
        admin.create_client(payload, skip_exists=True)
        setup.clients.append(payload["clientId"])
    parent = _group(admin, PROJECTS_GROUP, parent=None)
    for project in sorted(set(projects)):
        project_id = _group(admin, f"{PROJECTS_GROUP}/{project}", parent=parent)
        for role in ProjectRole:
            role_group = _group(
                admin, f"{PROJECTS_GROUP}/{project}/{role.value}", parent=project_id
            )
            admin.assign_group_realm_roles(role_group, [admin.get_realm_role(role.value)])
            setup.groups.append(f"/{PROJECTS_GROUP}/{project}/{role.value}")
    return setup


def _group(admin: KeycloakAdmin, path: str, *, parent: str | None) -> str:
    """The id of the group at ``path``, created under ``parent`` if missing."""
    name = path.rsplit("/", 1)[-1]
    created = admin.create_group({"name": name}, parent=parent, skip_exists=True)
    if created:
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
    ]
