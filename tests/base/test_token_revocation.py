"""Tokens end with what they stand for: a disabled, removed or demoted user, a changed
password, a newer service token. Every check is over HTTP with auth on."""

from __future__ import annotations

from typing import Any

import jwt
import pytest
from fastapi.testclient import TestClient
from tests.base.support import PASSWORD, add_user, bearer, password_login, tokens_for

from jip.base.schema import ProjectRole
from jip.config import AuthSettings, Settings
from jip.embedded import with_service_token
from jip.runtime import Runtime


@pytest.fixture
def alice(runtime: Runtime) -> str:
    add_user(runtime, "root", admin=True)
    add_user(runtime, "olga", projects={"lung": ProjectRole.OWNER})
    add_user(runtime, "alice", projects={"lung": ProjectRole.RESEARCHER})
    return "alice"


def refresh(client: TestClient, token: str) -> Any:
    return client.post(
        "/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": token, "client_id": "jip-cli"},
    )


def as_root(client: TestClient) -> dict[str, str]:
    return bearer(tokens_for(client, "root")["access_token"])


def test_access_tokens_are_short_lived_by_default() -> None:
    assert AuthSettings().access_token_ttl_s <= 15 * 60


def test_disabling_a_user_ends_their_access_token_at_once(client: TestClient, alice: str) -> None:
    tokens = tokens_for(client, alice)
    assert client.get("/api/me", headers=bearer(tokens["access_token"])).status_code == 200
    disabled = client.patch(f"/api/users/{alice}", json={"disabled": True}, headers=as_root(client))
    assert disabled.status_code == 200
    assert client.get("/api/me", headers=bearer(tokens["access_token"])).status_code == 401
    assert refresh(client, tokens["refresh_token"]).status_code == 400
    enabled = client.patch(f"/api/users/{alice}", json={"disabled": False}, headers=as_root(client))
    assert enabled.status_code == 200
    # Enabling again does not bring the old token back.
    assert client.get("/api/me", headers=bearer(tokens["access_token"])).status_code == 401


def test_removing_a_user_ends_their_access_token_at_once(client: TestClient, alice: str) -> None:
    tokens = tokens_for(client, alice)
    assert client.delete(f"/api/users/{alice}", headers=as_root(client)).status_code == 204
    assert client.get("/api/me", headers=bearer(tokens["access_token"])).status_code == 401
    assert refresh(client, tokens["refresh_token"]).status_code == 400
    # A new user of the same name does not inherit the old one's tokens.
    add_user_again = client.post(
        "/api/users", json={"username": alice, "password": PASSWORD}, headers=as_root(client)
    )
    assert add_user_again.status_code == 201
    assert client.get("/api/me", headers=bearer(tokens["access_token"])).status_code == 401


def test_taking_admin_rights_ends_the_admin_token(client: TestClient, alice: str) -> None:
    add_user(client.app.state.runtime, "ada", admin=True)  # type: ignore[attr-defined]
    ada = bearer(tokens_for(client, "ada")["access_token"])
    assert client.get("/api/users", headers=ada).status_code == 200
    taken = client.patch("/api/users/ada", json={"is_admin": False}, headers=as_root(client))
    assert taken.status_code == 200
    assert client.get("/api/users", headers=ada).status_code == 401


def test_losing_a_role_ends_the_token_that_names_it(client: TestClient, alice: str) -> None:
    tokens = tokens_for(client, alice)
    olga = bearer(tokens_for(client, "olga")["access_token"])
    demoted = client.put("/api/projects/lung/members/alice", json={"role": "viewer"}, headers=olga)
    assert demoted.status_code == 200
    assert client.get("/api/me", headers=bearer(tokens["access_token"])).status_code == 401
    # The session itself goes on: a refresh brings a token with the new role.
    renewed = refresh(client, tokens["refresh_token"])
    assert renewed.status_code == 200
    me = client.get("/api/me", headers=bearer(renewed.json()["access_token"])).json()
    assert me["projects"] == {"lung": "viewer"}


def test_leaving_a_project_ends_the_token_that_names_it(client: TestClient, alice: str) -> None:
    token = bearer(tokens_for(client, alice)["access_token"])
    olga = bearer(tokens_for(client, "olga")["access_token"])
    assert client.delete("/api/projects/lung/members/alice", headers=olga).status_code == 204
    assert client.get("/api/me", headers=token).status_code == 401


def test_removing_a_project_ends_its_members_tokens(client: TestClient, alice: str) -> None:
    token = bearer(tokens_for(client, alice)["access_token"])
    assert client.delete("/api/projects/lung", headers=as_root(client)).status_code == 204
    assert client.get("/api/me", headers=token).status_code == 401


def test_a_password_change_ends_every_access_token(client: TestClient, alice: str) -> None:
    laptop = bearer(tokens_for(client, alice)["access_token"])
    desktop = tokens_for(client, alice)
    changed = client.put(
        "/api/me/password",
        headers=bearer(desktop["access_token"]),
        json={"current_password": PASSWORD, "new_password": "alices-new-password"},
    )
    assert changed.status_code == 204
    assert client.get("/api/me", headers=laptop).status_code == 401
    assert client.get("/api/me", headers=bearer(desktop["access_token"])).status_code == 401
    assert refresh(client, desktop["refresh_token"]).status_code == 400
    assert password_login(client, alice, "alices-new-password").status_code == 200


def test_an_admin_reset_password_ends_every_access_token(client: TestClient, alice: str) -> None:
    token = bearer(tokens_for(client, alice)["access_token"])
    reset = client.put(
        f"/api/users/{alice}/password",
        json={"password": "reset-by-the-admin"},
        headers=as_root(client),
    )
    assert reset.status_code == 204
    assert client.get("/api/me", headers=token).status_code == 401


def test_a_token_without_a_version_is_refused(
    client: TestClient, runtime: Runtime, alice: str
) -> None:
    token = tokens_for(client, alice)["access_token"]
    claims = jwt.decode(token, options={"verify_signature": False})
    del claims["jip_ver"]
    keys = runtime.identity.issuer.keys  # type: ignore[union-attr]
    forged = jwt.encode(claims, keys.private_key, algorithm="RS256", headers={"kid": keys.kid})
    assert client.get("/api/me", headers=bearer(forged)).status_code == 401


def test_unrelated_changes_leave_tokens_alone(client: TestClient, alice: str) -> None:
    token = bearer(tokens_for(client, alice)["access_token"])
    root = as_root(client)
    assert client.post("/api/projects", json={"name": "brain"}, headers=root).status_code == 201
    added = client.put("/api/projects/brain/members/alice", json={"role": "viewer"}, headers=root)
    assert added.status_code == 200  # gaining a project: the old token is merely narrower
    assert client.get("/api/me", headers=token).status_code == 200


def test_a_second_service_token_revokes_the_first(runtime: Runtime, settings: Settings) -> None:
    """Each `jip up` mints a service token; the previous start's token stops working."""
    client = TestClient(client_app(runtime))
    first = with_service_token(settings, runtime).api_token
    assert first is not None
    first_headers = bearer(first.get_secret_value())
    assert client.get("/api/users", headers=first_headers).status_code == 200
    second = with_service_token(settings, runtime).api_token  # the next start
    assert second is not None
    assert client.get("/api/users", headers=first_headers).status_code == 401
    assert client.get("/api/users", headers=bearer(second.get_secret_value())).status_code == 200


def test_service_tokens_of_other_purposes_stay_valid(runtime: Runtime, settings: Settings) -> None:
    client = TestClient(client_app(runtime))
    api = with_service_token(settings, runtime, purpose="jip-up:api").api_token
    indexer = with_service_token(settings, runtime, purpose="jip-up:indexer").api_token
    assert api is not None and indexer is not None
    assert client.get("/api/users", headers=bearer(api.get_secret_value())).status_code == 200
    assert client.get("/api/users", headers=bearer(indexer.get_secret_value())).status_code == 200


def client_app(runtime: Runtime) -> Any:
    from jip.app import build_app

    return build_app(runtime)
