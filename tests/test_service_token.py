"""`jip up` hands Airflow tasks and auto-rules a token the site's own API accepts."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from jip.app import build_app
from jip.config import Settings
from jip.embedded import SERVICE_TOKEN_TTL_S, with_service_token
from jip.runtime import build_runtime


def test_service_token_is_accepted_as_site_admin(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    runtime = build_runtime(settings)
    try:
        with_token = with_service_token(settings, runtime)
        assert with_token.api_token is not None
        token = with_token.api_token.get_secret_value()
        user = runtime.identity.authenticator.authenticate(token)
        assert user.username == "jip-service"
        assert user.is_admin
        client = TestClient(build_app(runtime))
        headers = {"Authorization": f"Bearer {token}"}
        assert client.get("/api/store/conflicts", headers=headers).status_code == 200
        assert client.get("/api/store/conflicts").status_code == 401
    finally:
        runtime.close()


def test_service_token_outlives_user_tokens(tmp_path: Path) -> None:
    import jwt

    settings = Settings(data_dir=tmp_path / "data")
    runtime = build_runtime(settings)
    try:
        token = with_service_token(settings, runtime).api_token
        assert token is not None
        claims = jwt.decode(token.get_secret_value(), options={"verify_signature": False})
        assert claims["exp"] - claims["iat"] == SERVICE_TOKEN_TTL_S
    finally:
        runtime.close()


def test_configured_token_or_disabled_auth_is_left_alone(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", auth={"enabled": False})
    runtime = build_runtime(settings)
    try:
        assert with_service_token(settings, runtime).api_token is None
        given = Settings(data_dir=tmp_path / "data", api_token="from-a-secret")
        assert with_service_token(given, runtime).api_token == given.api_token
    finally:
        runtime.close()
