"""The whole app with auth enabled: every route needs a valid token except the public ones.

This walks every API route of ``build_app`` (all services' routers, whatever they are by
now), so a router added without thought is caught here.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from tests.base.support import add_user, auth_for, bearer, tokens_for

from jip.app import build_app
from jip.base.auth import is_public
from jip.base.schema import now_utc
from jip.config import Settings
from jip.db import Base
from jip.runtime import Runtime, build_runtime

PUBLIC = {"/healthz", "/readyz", "/metrics"}


def protected_calls(app: FastAPI) -> list[tuple[str, str]]:
    """(method, concrete path) of every protected route; path parameters filled with 1."""
    calls = []
    for route in app.routes:
        if not isinstance(route, APIRoute) or is_public(route.path):
            continue
        path = re.sub(r"\{[^}]+\}", "1", route.path)
        calls.extend((method, path) for method in sorted(route.methods - {"HEAD"}))
    return calls


def test_openapi_lists_only_protected_routes_besides_auth_and_discovery(app: FastAPI) -> None:
    for path in app.openapi()["paths"]:
        assert is_public(path) == path.startswith(("/auth/", "/.well-known/")), path
    schema_paths = {re.sub(r"\{[^}]+\}", "1", p) for p in app.openapi()["paths"]}
    protected = {path for _method, path in protected_calls(app)}
    assert schema_paths - protected == {p for p in schema_paths if is_public(p)}
    assert {"/api/store/stats", "/api/users", "/api/me"} <= protected


def test_every_protected_route_is_401_without_a_token(client: TestClient, app: FastAPI) -> None:
    calls = protected_calls(app)
    assert len(calls) > 10
    for method, path in calls:
        response = client.request(method, path)
        assert response.status_code == 401, (method, path, response.status_code)
        assert response.headers["www-authenticate"].startswith("Bearer"), (method, path)


def test_every_protected_route_is_401_with_an_expired_token(
    client: TestClient, app: FastAPI, runtime: Runtime
) -> None:
    add_user(runtime, "root", admin=True)
    issuer = runtime.identity.issuer
    assert issuer is not None
    two_hours_ago = now_utc() - timedelta(hours=2)
    issuer.clock = lambda: two_hours_ago
    expired = bearer(tokens_for(client, "root")["access_token"])
    for method, path in protected_calls(app):
        response = client.request(method, path, headers=expired)
        assert response.status_code == 401, (method, path, response.status_code)


def test_a_valid_token_gets_past_the_guard(
    client: TestClient, app: FastAPI, runtime: Runtime
) -> None:
    add_user(runtime, "root", admin=True)
    admin = auth_for(client, "root")
    for method, path in protected_calls(app):
        response = client.request(method, path, headers=admin)
        assert response.status_code != 401, (method, path, response.text)


@pytest.mark.parametrize("path", sorted(PUBLIC))
def test_probes_and_metrics_need_no_token(client: TestClient, path: str) -> None:
    assert client.get(path).status_code in (200, 503)


def test_discovery_and_jwks_need_no_token(client: TestClient) -> None:
    assert client.get("/.well-known/openid-configuration").status_code == 200
    assert client.get("/auth/jwks").status_code == 200


def test_auth_disabled_leaves_every_route_open(tmp_path: Path) -> None:
    runtime = build_runtime(Settings(data_dir=tmp_path / "data", auth={"enabled": False}))
    try:
        client = TestClient(build_app(runtime))
        assert client.get("/api/store/stats").status_code == 200
        assert client.get("/api/me").json() == {
            "username": "anonymous",
            "is_admin": True,
            "projects": {},
        }
        assert client.get("/api/users").status_code == 200
    finally:
        runtime.close()


def test_migrations_create_the_identity_tables_as_declared(runtime: Runtime) -> None:
    identity_tables = {
        "users",
        "projects",
        "memberships",
        "refresh_tokens",
        "authorization_codes",
        "audit_log",
    }
    with runtime.engine.connect() as connection:
        context = MigrationContext.configure(connection)
        diff = compare_metadata(context, Base.metadata)
    ours = [d for d in diff if _table_of(d) in identity_tables]
    assert ours == []


def _table_of(change: object) -> str | None:
    """The table an Alembic autogenerate diff entry is about."""
    item = change[0] if isinstance(change, list) else change  # modify_* come in lists
    assert isinstance(item, tuple)
    operation = str(item[0])
    if operation.startswith("modify_") or operation.endswith("_column"):
        return str(item[2])  # (op, schema, table, column, ...)
    if operation.endswith("_table"):
        return str(item[1].name)
    return str(item[1].table.name)  # indexes and constraints


def test_cluster_shape_serves_no_issuer_and_no_local_users(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "data", auth={"issuer_url": "https://kc.example/realms/jip"}
    )
    runtime = build_runtime(settings)
    try:
        assert runtime.identity.issuer is None
        claims = {"preferred_username": "root", "realm_access": {"roles": ["admin"]}}
        runtime.identity.authenticator.verifier = StubVerifier(claims)
        client = TestClient(build_app(runtime))
        assert client.post("/auth/token", data={"grant_type": "password"}).status_code == 404
        admin = bearer("keycloak-token")
        assert client.get("/api/users", headers=admin).status_code == 404
        assert client.get("/api/me", headers=admin).json()["is_admin"] is True
        assert client.get("/api/projects", headers=admin).status_code == 200
    finally:
        runtime.close()


class StubVerifier:
    def __init__(self, claims: dict[str, object]) -> None:
        self.claims = claims

    def verify(self, token: str) -> dict[str, object]:
        return dict(self.claims)
