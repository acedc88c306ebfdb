"""The real Keycloak of the identity tests (deploy/keycloak-test.sh starts it).

Tests skip, saying so, only when ``JIP_TEST_KEYCLOAK_URL`` is unset (`.ci/run` starts the
server and exports it). Each test module bootstraps a realm of its own with
:func:`jip.base.keycloak.bootstrap_realm`, so tests never see each other's users.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from keycloak import KeycloakAdmin

from jip.base.keycloak import bootstrap_realm
from jip.config import Settings

URL_VARIABLE = "JIP_TEST_KEYCLOAK_URL"
PASSWORD = "correct horse battery"


@dataclass(frozen=True)
class KeycloakServer:
    url: str
    admin_user: str
    admin_password: str

    def issuer(self, realm: str) -> str:
        return f"{self.url}/realms/{realm}"

    def admin(self, realm: str) -> KeycloakAdmin:
        """An admin client working in ``realm``, logged in to the master realm."""
        return KeycloakAdmin(
            server_url=self.url,
            username=self.admin_user,
            password=self.admin_password,
            realm_name=realm,
            user_realm_name="master",
        )

    def bootstrap(self, settings: Settings, projects: list[str]) -> KeycloakAdmin:
        bootstrap_realm(settings, self.url, self.admin_user, self.admin_password, projects=projects)
        admin = self.admin(realm_of(settings))
        admin.change_current_realm(realm_of(settings))
        return admin


def keycloak_server() -> KeycloakServer:
    url = os.environ.get(URL_VARIABLE)
    if not url:
        pytest.skip(
            f"{URL_VARIABLE} is unset: start Keycloak with "
            '`eval "$(deploy/keycloak-test.sh)"` to run the Keycloak tests'
        )
    return KeycloakServer(
        url=url.rstrip("/"),
        admin_user=os.environ.get("JIP_TEST_KEYCLOAK_ADMIN", "admin"),
        admin_password=os.environ.get("JIP_TEST_KEYCLOAK_ADMIN_PASSWORD", ""),
    )


def new_realm(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def realm_of(settings: Settings) -> str:
    assert settings.auth.issuer_url
    return settings.auth.issuer_url.rstrip("/").rsplit("/", 1)[-1]


def cluster_settings(
    server: KeycloakServer, realm: str, data_dir: Path, public_url: str
) -> Settings:
    return Settings(
        data_dir=data_dir,
        auth={"issuer_url": server.issuer(realm), "public_url": public_url},
    )


def add_user(
    admin: KeycloakAdmin,
    username: str,
    *,
    groups: Sequence[str] = (),
    realm_roles: Sequence[str] = (),
) -> str:
    """A user who can log in at once (no required actions), in ``groups`` (paths)."""
    user_id = admin.create_user(
        {
            "username": username,
            "email": f"{username}@example.org",
            "firstName": username.title(),
            "lastName": "Tester",
            "emailVerified": True,
            "enabled": True,
            "credentials": [{"type": "password", "value": PASSWORD, "temporary": False}],
        }
    )
    for path in groups:
        admin.group_user_add(user_id, admin.get_group_by_path(path)["id"])
    if realm_roles:
        admin.assign_realm_roles(user_id, [admin.get_realm_role(r) for r in realm_roles])
    return str(user_id)


def set_enabled(admin: KeycloakAdmin, user_id: str, enabled: bool) -> None:
    admin.update_user(user_id, {"enabled": enabled})


def token_endpoint(server: KeycloakServer, realm: str) -> str:
    return f"{server.issuer(realm)}/protocol/openid-connect/token"


def password_grant(
    server: KeycloakServer, realm: str, username: str, *, client_id: str = "jip-cli"
) -> httpx.Response:
    """What `jip login` asks of Keycloak: the password grant of the CLI client."""
    return httpx.post(
        token_endpoint(server, realm),
        data={
            "grant_type": "password",
            "client_id": client_id,
            "username": username,
            "password": PASSWORD,
            "scope": "openid profile",
        },
        timeout=20,
    )


def tokens(server: KeycloakServer, realm: str, username: str) -> dict[str, Any]:
    response = password_grant(server, realm, username)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body
