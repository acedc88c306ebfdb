"""Helpers of the BASE tests: a site's settings, users and logins."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from jip.base.keys import KEY_FILE
from jip.base.schema import ProjectRole
from jip.config import Settings
from jip.runtime import Runtime

SITE = "http://testserver"  # TestClient's base URL, used as the issuer identifier
PASSWORD = "correct horse battery"


def site_settings(data_dir: Path, **auth: Any) -> Settings:
    return Settings(data_dir=data_dir, auth={"public_url": SITE, **auth})


def install_key(settings: Settings, key: Path) -> None:
    target = settings.data_dir / "keys"
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    shutil.copy2(key, target / KEY_FILE)
    (target / KEY_FILE).chmod(0o600)


def add_user(
    runtime: Runtime,
    username: str,
    *,
    admin: bool = False,
    projects: dict[str, ProjectRole] | None = None,
) -> None:
    identity = runtime.identity
    identity.users.create(username, PASSWORD, is_admin=admin)
    for project, role in (projects or {}).items():
        if project not in identity.projects.names():
            identity.projects.create(project)
        identity.projects.set_member(project, username, role)


def password_login(client: TestClient, username: str, password: str = PASSWORD) -> Any:
    return client.post(
        "/auth/token",
        data={
            "grant_type": "password",
            "client_id": "jip-cli",
            "username": username,
            "password": password,
        },
    )


def tokens_for(client: TestClient, username: str) -> dict[str, Any]:
    response = password_login(client, username)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def auth_for(client: TestClient, username: str) -> dict[str, str]:
    return bearer(tokens_for(client, username)["access_token"])
