"""`bootstrap_realm` and `jip keycloak bootstrap` against a real Keycloak server.

What the realm holds afterwards is read back through Keycloak's admin API; errors
(unreachable server, wrong admin password) are checked as the CLI shows them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from keycloak import KeycloakAdmin
from tests.base.keycloak_server import (
    KeycloakServer,
    cluster_settings,
    keycloak_server,
    new_realm,
)

from jip.base.keycloak import bootstrap_realm, realm_name, server_url
from jip.cli import keycloak as keycloak_cli
from jip.cli.main import cli
from jip.config import Settings
from jip.errors import Invalid, Unauthorized, Unavailable
from jip.runtime import build_runtime

SITE = "https://jip.site1.example"


@pytest.fixture(scope="module")
def server() -> KeycloakServer:
    return keycloak_server()


@pytest.fixture
def settings(server: KeycloakServer, tmp_path: Path) -> Settings:
    settings = cluster_settings(server, new_realm("boot"), tmp_path / "data", SITE)
    settings.auth.redirect_uris = ["https://viewer.site1.example/callback"]
    return settings


def bootstrap(server: KeycloakServer, settings: Settings, projects: list[str]) -> KeycloakAdmin:
    lines: list[str] = []
    bootstrap_realm(
        settings,
        server.url,
        server.admin_user,
        server.admin_password,
        projects=projects,
        progress=lines.append,
    )
    assert lines, "bootstrap reports its steps"
    admin = server.admin(realm_name(settings))
    admin.change_current_realm(realm_name(settings))
    return admin


@dataclass
class Booted:
    settings: Settings
    admin: KeycloakAdmin


@pytest.fixture(scope="module")
def booted(server: KeycloakServer, tmp_path_factory: pytest.TempPathFactory) -> Booted:
    """One realm bootstrapped with projects lung and brain, for the tests that only read."""
    settings = cluster_settings(server, new_realm("boot"), tmp_path_factory.mktemp("b"), SITE)
    settings.auth.redirect_uris = ["https://viewer.site1.example/callback"]
    return Booted(settings, bootstrap(server, settings, ["lung", "brain"]))


def client_uuid(admin: KeycloakAdmin, client_id: str) -> str:
    found = admin.get_client_id(client_id)
    assert found is not None, f"no client {client_id}"
    return found


def group_paths(admin: KeycloakAdmin) -> list[str]:
    def walk(groups: list[dict[str, object]]) -> list[str]:
        paths: list[str] = []
        for group in groups:
            paths.append(str(group["path"]))
            children = admin.get_group_children(str(group["id"]))
            paths.extend(walk(children))
        return paths

    return sorted(walk(admin.get_groups()))


def test_realm_name_and_server_url_come_from_the_issuer_url(tmp_path: Path) -> None:
    issuer = "https://kc.example/auth/realms/site1"
    assert realm_name(Settings(data_dir=tmp_path, auth={"issuer_url": issuer})) == "site1"
    assert realm_name(Settings(data_dir=tmp_path)) == "jip"
    assert server_url(issuer) == "https://kc.example/auth"
    with pytest.raises(Invalid, match="realms/<realm>"):
        server_url("https://kc.example/")


def test_bootstrap_creates_the_realm_with_rotation(booted: Booted) -> None:
    admin, settings = booted.admin, booted.settings
    realm = admin.get_realm(realm_name(settings))
    assert realm["enabled"] is True
    assert realm["revokeRefreshToken"] is True
    assert realm["accessTokenLifespan"] == settings.auth.access_token_ttl_s


def test_bootstrap_creates_the_four_realm_roles(booted: Booted) -> None:
    admin = booted.admin
    names = {role["name"] for role in admin.get_realm_roles()}
    assert {"admin", "owner", "researcher", "viewer"} <= names


def test_bootstrap_creates_the_web_and_cli_clients(booted: Booted) -> None:
    admin = booted.admin
    web = admin.get_client(client_uuid(admin, "jip"))
    cli_client = admin.get_client(client_uuid(admin, "jip-cli"))
    assert web["publicClient"] and cli_client["publicClient"]
    assert web["standardFlowEnabled"] and not web["directAccessGrantsEnabled"]
    assert web["attributes"]["pkce.code.challenge.method"] == "S256"
    assert sorted(web["redirectUris"]) == [
        f"{SITE}/*",
        "https://viewer.site1.example/callback",
    ]
    assert cli_client["directAccessGrantsEnabled"]
    for client in (web, cli_client):
        mappers = {m["protocolMapper"]: m["config"] for m in client["protocolMappers"]}
        assert mappers["oidc-audience-mapper"]["included.custom.audience"] == "jip"
        assert mappers["oidc-group-membership-mapper"]["claim.name"] == "groups"
        assert mappers["oidc-group-membership-mapper"]["full.path"] == "true"


def test_bootstrap_creates_a_group_per_project_with_role_subgroups(booted: Booted) -> None:
    admin = booted.admin
    assert group_paths(admin) == [
        "/projects",
        "/projects/brain",
        "/projects/brain/owner",
        "/projects/brain/researcher",
        "/projects/brain/viewer",
        "/projects/lung",
        "/projects/lung/owner",
        "/projects/lung/researcher",
        "/projects/lung/viewer",
    ]
    researcher = admin.get_group_by_path("/projects/lung/researcher")
    roles = admin.get_group_realm_roles(researcher["id"])
    assert [role["name"] for role in roles] == ["researcher"]


def test_bootstrap_twice_keeps_what_exists_and_adds_new_projects(
    server: KeycloakServer, settings: Settings
) -> None:
    admin = bootstrap(server, settings, ["lung"])
    lung = admin.get_group_by_path("/projects/lung")["id"]
    web = client_uuid(admin, "jip")
    settings.auth.public_url = "https://jip.moved.example"
    again = bootstrap_realm(
        settings, server.url, server.admin_user, server.admin_password, projects=["lung", "brain"]
    )
    assert admin.get_group_by_path("/projects/lung")["id"] == lung
    assert admin.get_client_id("jip") == web
    assert sorted(again.created) == [
        "group /projects/brain",
        "group /projects/brain/owner",
        "group /projects/brain/researcher",
        "group /projects/brain/viewer",
    ]
    assert "https://jip.moved.example/*" in admin.get_client(web)["redirectUris"]
    mappers = admin.get_mappers_from_client(web)
    assert sorted(m["name"] for m in mappers) == [
        "groups",
        "jip-audience",
        "jip-realm-roles-userinfo",
    ]


def test_a_wrong_admin_password_says_what_to_check(
    server: KeycloakServer, settings: Settings
) -> None:
    with pytest.raises(Unauthorized, match="check --admin-user and --admin-password"):
        bootstrap_realm(settings, server.url, server.admin_user, "not-it", projects=[])


def test_an_unreachable_server_says_what_to_check(settings: Settings) -> None:
    with pytest.raises(Unavailable, match=r"cannot reach Keycloak at http://127\.0\.0\.1:9"):
        bootstrap_realm(settings, "http://127.0.0.1:9", "admin", "pw", projects=[])


def test_a_realm_url_given_as_admin_url_says_to_give_the_base_url(
    server: KeycloakServer, settings: Settings
) -> None:
    with pytest.raises(Unavailable, match="give Keycloak's base URL"):
        bootstrap_realm(
            settings,
            server.issuer("master"),
            server.admin_user,
            server.admin_password,
            projects=[],
        )


def invoke(data_dir: Path, settings: Settings, *args: str, password: str) -> Result:
    cli.add_command(keycloak_cli.keycloak)  # without the other services' commands
    return CliRunner().invoke(
        cli,
        ["--data-dir", str(data_dir), "keycloak", "bootstrap", *args],
        env={
            "JIP_AUTH__ISSUER_URL": settings.auth.issuer_url,
            "JIP_AUTH__PUBLIC_URL": SITE,
            "JIP_KEYCLOAK_ADMIN_PASSWORD": password,
        },
    )


def test_cli_bootstrap_makes_a_group_per_catalog_project_with_progress(
    server: KeycloakServer, settings: Settings, tmp_path: Path
) -> None:
    data_dir = tmp_path / "site"
    runtime = build_runtime(Settings(data_dir=data_dir))
    runtime.identity.projects.create("liver")
    runtime.close()
    result = invoke(data_dir, settings, "--project", "heart", password=server.admin_password)
    assert result.exit_code == 0, result.output
    output = result.output
    assert f"realm {realm_name(settings)}: created" in output
    assert "project liver: groups owner, researcher, viewer" in output
    assert "client jip-cli: created" in output
    admin = server.admin(realm_name(settings))
    admin.change_current_realm(realm_name(settings))
    assert admin.get_group_by_path("/projects/liver/owner")["name"] == "owner"
    assert admin.get_group_by_path("/projects/heart/viewer")["name"] == "viewer"


def test_cli_bootstrap_with_a_wrong_password_fails_with_advice(
    server: KeycloakServer, settings: Settings, tmp_path: Path
) -> None:
    result = invoke(tmp_path / "site", settings, password="not-it")
    assert result.exit_code == 1
    assert "check --admin-user and --admin-password" in result.output
    assert "Traceback" not in result.output


def test_cli_bootstrap_without_issuer_or_admin_url_asks_for_one(tmp_path: Path) -> None:
    cli.add_command(keycloak_cli.keycloak)
    result = CliRunner().invoke(
        cli,
        ["--data-dir", str(tmp_path), "keycloak", "bootstrap", "--admin-password", "pw"],
        env={"JIP_AUTH__ISSUER_URL": ""},
    )
    assert result.exit_code == 2
    assert "give --admin-url" in result.output
