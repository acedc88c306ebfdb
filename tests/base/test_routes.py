"""BASE API: users (admins only), projects and members (admins, owners), /api/me."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from tests.base.support import PASSWORD, add_user, auth_for, password_login

from jip.base.schema import ProjectRole
from jip.runtime import Runtime

ADMIN_ONLY = [
    ("GET", "/api/users"),
    ("POST", "/api/users"),
    ("GET", "/api/users/alice"),
    ("PATCH", "/api/users/alice"),
    ("PUT", "/api/users/alice/password"),
    ("DELETE", "/api/users/alice"),
    ("POST", "/api/projects"),
    ("DELETE", "/api/projects/lung"),
    ("GET", "/api/audit"),
    ("GET", "/api/audit/export"),
]
BODIES = {
    ("POST", "/api/users"): {"username": "mallory", "is_admin": True},
    ("PATCH", "/api/users/alice"): {"is_admin": True},
    ("PUT", "/api/users/alice/password"): {"password": "taken-over-password"},
    ("POST", "/api/projects"): {"name": "mine"},
}


@pytest.fixture
def site(runtime: Runtime) -> Runtime:
    add_user(runtime, "root", admin=True)
    add_user(runtime, "alice", projects={"lung": ProjectRole.RESEARCHER})
    add_user(runtime, "olga", projects={"lung": ProjectRole.OWNER})
    add_user(runtime, "bob", projects={"brain": ProjectRole.VIEWER})
    return runtime


def test_admin_routes_refuse_researchers_with_403(client: TestClient, site: Runtime) -> None:
    alice = auth_for(client, "alice")
    for method, path in ADMIN_ONLY:
        response = client.request(method, path, headers=alice, json=BODIES.get((method, path)))
        assert response.status_code == 403, (method, path, response.text)


def test_admin_routes_refuse_anonymous_callers_with_401(client: TestClient, site: Runtime) -> None:
    for method, path in ADMIN_ONLY:
        response = client.request(method, path, json=BODIES.get((method, path)))
        assert response.status_code == 401, (method, path)
        assert response.headers["www-authenticate"].startswith("Bearer")


def test_admin_manages_users(client: TestClient, site: Runtime) -> None:
    admin = auth_for(client, "root")
    created = client.post("/api/users", headers=admin, json={"username": "Carol"})
    assert created.status_code == 201
    one_time = created.json()["one_time_password"]
    assert created.json()["username"] == "carol" and one_time
    assert password_login(client, "carol", one_time).status_code == 200

    assert (
        client.put(
            "/api/users/carol/password", headers=admin, json={"password": "carols-own-password"}
        ).status_code
        == 204
    )
    assert password_login(client, "carol", "carols-own-password").status_code == 200

    updated = client.patch("/api/users/carol", headers=admin, json={"disabled": True})
    assert updated.json()["disabled"] is True
    assert password_login(client, "carol", "carols-own-password").status_code == 400

    names = [u["username"] for u in client.get("/api/users", headers=admin).json()]
    assert names == ["alice", "bob", "carol", "olga", "root"]
    assert client.delete("/api/users/carol", headers=admin).status_code == 204
    assert client.get("/api/users/carol", headers=admin).status_code == 404


def test_creating_a_user_with_a_password_returns_no_one_time_password(
    client: TestClient, site: Runtime
) -> None:
    response = client.post(
        "/api/users",
        headers=auth_for(client, "root"),
        json={"username": "dave", "password": "daves-password"},
    )
    assert response.status_code == 201
    assert response.json()["one_time_password"] is None
    assert "password" not in {k for k in response.json() if k != "one_time_password"}


def test_bad_user_input_is_a_400_naming_the_problem(client: TestClient, site: Runtime) -> None:
    admin = auth_for(client, "root")
    response = client.post("/api/users", headers=admin, json={"username": "a b"})
    assert response.status_code == 400
    assert "username" in response.json()["detail"]
    assert client.post("/api/users", headers=admin, json={"username": "alice"}).status_code == 409


def test_the_last_admin_cannot_demote_themselves(client: TestClient, site: Runtime) -> None:
    response = client.patch(
        "/api/users/root", headers=auth_for(client, "root"), json={"is_admin": False}
    )
    assert response.status_code == 409


def test_projects_list_only_the_callers_projects(client: TestClient, site: Runtime) -> None:
    mine = client.get("/api/projects", headers=auth_for(client, "alice")).json()
    assert [p["name"] for p in mine] == ["lung"]
    everything = client.get("/api/projects", headers=auth_for(client, "root")).json()
    assert [p["name"] for p in everything] == ["brain", "default", "lung"]


def test_foreign_project_is_not_found(client: TestClient, site: Runtime) -> None:
    alice = auth_for(client, "alice")
    assert client.get("/api/projects/brain", headers=alice).status_code == 404
    assert client.get("/api/projects/brain/members", headers=alice).status_code == 404
    assert client.get("/api/projects/lung", headers=alice).status_code == 200


def test_owner_manages_members_and_researcher_cannot(client: TestClient, site: Runtime) -> None:
    olga, alice = auth_for(client, "olga"), auth_for(client, "alice")
    added = client.put("/api/projects/lung/members/bob", headers=olga, json={"role": "viewer"})
    assert added.status_code == 200
    assert added.json()["members"] == {"alice": "researcher", "bob": "viewer", "olga": "owner"}
    refused = client.put("/api/projects/lung/members/bob", headers=alice, json={"role": "owner"})
    assert refused.status_code == 403
    assert (
        client.patch("/api/projects/lung", headers=alice, json={"description": "x"}).status_code
        == 403
    )
    assert (
        client.patch(
            "/api/projects/lung", headers=olga, json={"description": "Lung CT cohort"}
        ).json()["description"]
        == "Lung CT cohort"
    )
    assert client.delete("/api/projects/lung/members/bob", headers=olga).status_code == 204
    assert client.delete("/api/projects/lung/members/bob", headers=olga).status_code == 404


def test_the_last_owner_stays(client: TestClient, site: Runtime) -> None:
    olga = auth_for(client, "olga")
    response = client.put("/api/projects/lung/members/olga", headers=olga, json={"role": "viewer"})
    assert response.status_code == 409
    assert client.delete("/api/projects/lung/members/olga", headers=olga).status_code == 409


def test_admin_creates_and_deletes_projects(client: TestClient, site: Runtime) -> None:
    admin = auth_for(client, "root")
    created = client.post(
        "/api/projects",
        headers=admin,
        json={"name": "liver", "description": "Liver MR", "owner": "alice"},
    )
    assert created.status_code == 201
    assert created.json()["members"] == {"alice": "owner"}
    assert client.post("/api/projects", headers=admin, json={"name": "liver"}).status_code == 409
    assert client.post("/api/projects", headers=admin, json={"name": "Bad/Name"}).status_code == 400
    assert client.delete("/api/projects/liver", headers=admin).status_code == 204
    assert client.get("/api/projects/liver", headers=admin).status_code == 404


def test_membership_changes_reach_the_token_at_the_next_login(
    client: TestClient, site: Runtime
) -> None:
    client.put(
        "/api/projects/brain/members/alice",
        headers=auth_for(client, "root"),
        json={"role": "researcher"},
    )
    me = client.get("/api/me", headers=auth_for(client, "alice")).json()
    assert me["projects"] == {"brain": "researcher", "lung": "researcher"}


def test_users_change_their_own_password(client: TestClient, site: Runtime) -> None:
    alice = auth_for(client, "alice")
    wrong = client.put(
        "/api/me/password",
        headers=alice,
        json={"current_password": "not-it", "new_password": "alices-new-password"},
    )
    assert wrong.status_code == 401
    changed = client.put(
        "/api/me/password",
        headers=alice,
        json={"current_password": PASSWORD, "new_password": "alices-new-password"},
    )
    assert changed.status_code == 204
    assert password_login(client, "alice", "alices-new-password").status_code == 200
