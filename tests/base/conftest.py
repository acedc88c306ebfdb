"""A site with auth enabled on a temporary data dir, its app, and helpers to log in.

Passwords are hashed with a cheap scrypt cost here (the production cost is ~0.15 s a
hash); ``test_users.py`` checks the production parameters themselves. The issuer's RSA
key is generated once per session and copied into each site's key directory.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from tests.base.support import install_key, site_settings

from jip.app import build_app
from jip.base import users as users_module
from jip.base.keys import SigningKeys
from jip.config import Settings
from jip.runtime import Runtime, build_runtime


@pytest.fixture(autouse=True)
def cheap_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(users_module, "DEFAULT_COST", users_module.ScryptCost(n=2**10, r=8, p=1))
    users_module._dummy_hash.cache_clear()


@pytest.fixture(scope="session")
def issuer_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    keys = SigningKeys(tmp_path_factory.mktemp("issuer-key"))
    keys.private_key  # noqa: B018  (creates the key file)
    return keys.path


@pytest.fixture
def settings(tmp_path: Path, issuer_key: Path) -> Settings:
    settings = site_settings(tmp_path / "data")
    install_key(settings, issuer_key)
    return settings


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    runtime = build_runtime(settings)
    yield runtime
    runtime.close()


@pytest.fixture
def app(runtime: Runtime) -> FastAPI:
    return build_app(runtime)


@pytest.fixture
def client(app: FastAPI) -> TestClient:
    return TestClient(app)
