"""`bootstrap_realm` against a fake Keycloak admin API: the requests it makes."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pytest
from click.testing import CliRunner
from keycloak import KeycloakAdmin
from tests.base.fake_keycloak import FakeKeycloak

from jip.base.keycloak import bootstrap_realm, realm_name
from jip.cli import user as user_cli
from jip.cli.main import cli
from jip.config import Settings
from jip.runtime import build_runtime

ISSUER = "https://kc.example/realms/site1"


@pytest.fixture
def fake() -> FakeKeycloak:
    return FakeKeycloak()


@pytest.fixture
def cluster_settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        auth={
            "issuer_url": ISSUER,
            "public_url": "https://jip.site1.example",
            "redirect_uris": ["https://viewer.site1.example/callback"],
        },
    )


def run(settings: Settings, fake: FakeKeycloak, projects: list[str]) -> object:
    admin = KeycloakAdmin(connection=fake)  # type: ignore[arg-type]
    return bootstrap_realm(
        settings, "https://kc.example", "admin", "pw", projects=projects, admin=admin
    )


def test_realm_name_comes_from_the_issuer_url(tmp_path: Path) -> None:
    assert realm_name(Settings(data_dir=tmp_path, auth={"issuer_url": ISSUER})) == "site1"
    assert realm_name(Settings(data_dir=tmp_path)) == "jip"


def test_bootstrap_creates_the_realm_with_rotation(
    cluster_settings: Settings, fake: FakeKeycloak
) -> None:
    run(cluster_settings, fake, [])
    realm = fake.realms["site1"]
    assert realm["enabled"] is True
    assert realm["revokeRefreshToken"] is True
    assert realm["accessTokenLifespan"] == cluster_settings.auth.access_token_ttl_s
    assert fake.realm_name == "site1"
    assert all(r.path.startswith("admin/realms/site1") for r in fake.requests[1:])


def test_bootstrap_creates_the_four_realm_roles(
    cluster_settings: Settings, fake: FakeKeycloak
) -> None:
    run(cluster_settings, fake, [])
    assert sorted(fake.roles) == ["admin", "owner", "researcher", "viewer"]


def test_bootstrap_creates_the_web_and_cli_clients(
    cluster_settings: Settings, fake: FakeKeycloak
) -> None:
    run(cluster_settings, fake, [])
    web, cli_client = fake.clients["jip"], fake.clients["jip-cli"]
    assert web["publicClient"] and cli_client["publicClient"]
    assert web["standardFlowEnabled"] and not web["directAccessGrantsEnabled"]
    assert web["attributes"]["pkce.code.challenge.method"] == "S256"
    assert web["redirectUris"] == [
        "https://jip.site1.example/*",
        "https://viewer.site1.example/callback",
    ]
    assert cli_client["directAccessGrantsEnabled"]
    for client in (web, cli_client):
        mappers = {m["protocolMapper"]: m["config"] for m in client["protocolMappers"]}
        assert mappers["oidc-audience-mapper"]["included.custom.audience"] == "jip"
        assert mappers["oidc-group-membership-mapper"]["claim.name"] == "groups"
        assert mappers["oidc-group-membership-mapper"]["full.path"] == "true"


def test_bootstrap_creates_a_group_per_project_with_role_subgroups(
    cluster_settings: Settings, fake: FakeKeycloak
) -> None:
    setup = run(cluster_settings, fake, ["lung", "brain"])
    assert sorted(fake.groups) == [
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
    assert fake.group_roles["/projects/lung/researcher"] == ["researcher"]
    assert fake.group_roles["/projects/brain/owner"] == ["owner"]
    assert "/projects/lung/viewer" in setup.groups  # type: ignore[attr-defined]


def test_bootstrap_twice_creates_nothing_new(
    cluster_settings: Settings, fake: FakeKeycloak
) -> None:
    run(cluster_settings, fake, ["lung"])
    groups, clients = dict(fake.groups), dict(fake.clients)
    fake.requests.clear()
    run(cluster_settings, fake, ["lung", "brain"])
    assert fake.groups["/projects/lung"] == groups["/projects/lung"]
    assert fake.clients == clients
    client_posts = [r for r in fake.created if r.path.endswith("/clients")]
    assert client_posts == []  # looked up by clientId first
    assert "/projects/brain/viewer" in fake.groups


def test_cli_bootstrap_makes_a_group_per_catalog_project(
    tmp_path: Path, fake: FakeKeycloak
) -> None:
    runtime = build_runtime(Settings(data_dir=tmp_path / "data"))
    runtime.identity.projects.create("liver")
    runtime.close()
    cli.add_command(user_cli.keycloak)  # without the other services' commands
    admin = KeycloakAdmin(connection=fake)  # type: ignore[arg-type]
    with mock.patch("jip.base.keycloak.KeycloakAdmin", return_value=admin):
        result = CliRunner().invoke(
            cli,
            [
                *("--data-dir", str(tmp_path / "data"), "keycloak", "bootstrap"),
                *("--admin-url", "https://kc.example", "--admin-password", "pw"),
            ],
        )
    assert result.exit_code == 0, result.output
    assert "/projects/liver/owner" in fake.groups


def test_cli_bootstrap_logs_in_to_the_master_realm(tmp_path: Path, fake: FakeKeycloak) -> None:
    cli.add_command(user_cli.keycloak)  # without the other services' commands
    made: list[dict[str, object]] = []

    def admin_factory(**kwargs: object) -> KeycloakAdmin:
        made.append(kwargs)
        return KeycloakAdmin(connection=fake)  # type: ignore[arg-type]

    with mock.patch("jip.base.keycloak.KeycloakAdmin", side_effect=admin_factory):
        result = CliRunner().invoke(
            cli,
            [
                "--data-dir",
                str(tmp_path / "data"),
                "keycloak",
                "bootstrap",
                "--admin-url",
                "https://kc.example",
                "--admin-user",
                "kcadmin",
            ],
            input="kc-password\n",
        )
    assert result.exit_code == 0, result.output
    assert made == [
        {
            "server_url": "https://kc.example",
            "username": "kcadmin",
            "password": "kc-password",
            "realm_name": "jip",
            "user_realm_name": "master",
        }
    ]
    assert "Realm jip" in result.output
    assert sorted(fake.clients) == ["jip", "jip-cli"]
