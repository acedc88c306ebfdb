"""JIP checks Keycloak's own tokens: JWKS of the realm, issuer, audience, and groups.

A real Keycloak (deploy/keycloak-test.sh) issues the tokens, through the realm that
`bootstrap_realm` sets up; the site is built as the cluster shape builds it
(``auth.issuer_url`` set) and called over HTTP with those tokens.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.base.keycloak_server import (
    PASSWORD,
    add_user,
    cluster_settings,
    new_realm,
    password_grant,
    set_enabled,
    token_endpoint,
    tokens,
)
from tests.base.keycloak_site import SITE, Realm, site_on_new_realm
from tests.support.servers import serve_in_thread

from jip.base import CurrentUser
from jip.base.keycloak import KeycloakLogin
from jip.base.schema import ProjectRole
from jip.errors import Unauthorized


@pytest.fixture(scope="module")
def realm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Realm]:
    with site_on_new_realm(tmp_path_factory.mktemp("kc") / "data", "tokens") as site:
        add_user(site.admin, "rita", groups=["/projects/lung/researcher", "/projects/brain/viewer"])
        add_user(site.admin, "ada", realm_roles=["admin"])
        yield site


def test_groups_become_projects_and_roles(realm: Realm) -> None:
    response = realm.client.get("/api/me", headers=realm.bearer("rita"))
    assert response.status_code == 200, response.text
    assert response.json() == {
        "username": "rita",
        "is_admin": False,
        "projects": {"lung": "researcher", "brain": "viewer"},
    }


def test_the_admin_realm_role_makes_a_site_admin(realm: Realm) -> None:
    token = tokens(realm.server, realm.name, "ada")["access_token"]
    user = realm.runtime.identity.authenticator.authenticate(token)
    assert user == CurrentUser(username="ada", is_admin=True, projects={})


def test_a_researcher_cannot_reach_admin_routes(realm: Realm) -> None:
    response = realm.client.get("/api/users", headers=realm.bearer("rita"))
    assert response.status_code in (403, 404), response.text


def test_a_token_of_another_realm_is_refused(
    realm: Realm, tmp_path_factory: pytest.TempPathFactory
) -> None:
    other = new_realm("other")
    other_settings = cluster_settings(
        realm.server, other, tmp_path_factory.mktemp("other") / "data", SITE
    )
    admin = realm.server.bootstrap(other_settings, ["lung"])
    add_user(admin, "rita", groups=["/projects/lung/owner"])  # same name, same groups
    token = tokens(realm.server, other, "rita")["access_token"]
    response = realm.client.get("/api/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    with pytest.raises(Unauthorized, match="invalid token"):
        realm.runtime.identity.authenticator.authenticate(token)


def test_a_token_for_another_audience_is_refused(realm: Realm) -> None:
    # Another application of the same realm: its tokens lack aud=jip.
    realm.admin.create_client(
        {
            "clientId": "other-app",
            "publicClient": True,
            "directAccessGrantsEnabled": True,
            "standardFlowEnabled": False,
        },
        skip_exists=True,
    )
    response = password_grant(realm.server, realm.name, "rita", client_id="other-app")
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    with pytest.raises(Unauthorized, match=r"(?i)audience"):
        realm.runtime.identity.authenticator.authenticate(token)
    answer = realm.client.get("/api/me", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 401


def test_an_id_token_is_no_access_token(realm: Realm) -> None:
    id_token = tokens(realm.server, realm.name, "rita")["id_token"]
    response = realm.client.get("/api/me", headers={"Authorization": f"Bearer {id_token}"})
    assert response.status_code == 401


def test_a_disabled_user_gets_no_token_and_cannot_refresh(realm: Realm) -> None:
    user_id = add_user(realm.admin, "dora", groups=["/projects/lung/viewer"])
    refresh = tokens(realm.server, realm.name, "dora")["refresh_token"]
    set_enabled(realm.admin, user_id, False)
    assert password_grant(realm.server, realm.name, "dora").status_code in (400, 401)
    response = httpx.post(
        token_endpoint(realm.server, realm.name),
        data={"grant_type": "refresh_token", "client_id": "jip-cli", "refresh_token": refresh},
        timeout=20,
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


def test_the_web_login_refuses_to_renew_a_disabled_users_session(realm: Realm) -> None:
    user_id = add_user(realm.admin, "elly", groups=["/projects/lung/viewer"])
    login = KeycloakLogin(realm.settings, client_id="jip-cli")
    refresh = tokens(realm.server, realm.name, "elly")["refresh_token"]
    renewed = login.refresh_grant(refresh)  # enabled: renewed, with rotation
    assert renewed["access_token"]
    set_enabled(realm.admin, user_id, False)
    with pytest.raises(Unauthorized, match="log in again"):
        login.refresh_grant(renewed["refresh_token"])


def test_project_roles_follow_group_membership(realm: Realm) -> None:
    add_user(realm.admin, "finn", groups=["/projects/brain/owner"])
    token = tokens(realm.server, realm.name, "finn")["access_token"]
    user = realm.runtime.identity.authenticator.authenticate(token)
    assert user.projects == {"brain": ProjectRole.OWNER}
    assert user.has_role("brain", ProjectRole.RESEARCHER)
    assert not user.has_role("lung", ProjectRole.VIEWER)


def test_jip_login_gets_a_keycloak_token_the_site_accepts(
    realm: Realm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from jip.cli import project as project_cli
    from jip.cli import user as user_cli
    from jip.cli.main import cli

    cli.add_command(user_cli.login)  # without the other services' commands
    cli.add_command(project_cli.project)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # the stored token
    for name in ("lung", "brain", "heart"):
        if name not in realm.runtime.identity.projects.names():
            realm.runtime.identity.projects.create(name)
    runner = CliRunner()
    with serve_in_thread(realm.client.app) as site:  # type: ignore[arg-type]
        login = runner.invoke(
            cli,
            [
                *("login", "--url", site, "--issuer", realm.server.issuer(realm.name)),
                *("--username", "rita", "--password-stdin"),
            ],
            input=f"{PASSWORD}\n",
        )
        assert login.exit_code == 0, login.output
        listed = runner.invoke(cli, ["project", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    assert sorted(p["name"] for p in json.loads(listed.output)) == ["brain", "lung"]
