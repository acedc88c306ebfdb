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
from tests.base.support import (
    Site,
    add_user,
    auth_for,
    ingest_series,
    install_key,
    series_datasets,
    site_settings,
)

from jip.app import build_app
from jip.base import users as users_module
from jip.base.keys import SigningKeys
from jip.base.schema import ProjectRole
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


@pytest.fixture
def site(tmp_path: Path, issuer_key: Path, catalog_url: str) -> Iterator[Site]:
    """Projects ``liver`` and ``lung`` with their users; a series of each and one of neither.

    A series reaches ``liver`` by an AE-title rule, ``lung`` by a StudyDescription rule,
    and the default project by no rule.
    """
    settings = site_settings(tmp_path / "data").model_copy(update={"catalog_url": catalog_url})
    install_key(settings, issuer_key)
    runtime = build_runtime(settings)
    add_user(runtime, "root", admin=True)
    add_user(runtime, "alice", projects={"liver": ProjectRole.RESEARCHER})
    add_user(runtime, "bob", projects={"lung": ProjectRole.RESEARCHER})
    add_user(runtime, "olga", projects={"liver": ProjectRole.OWNER})
    add_user(
        runtime,
        "carol",
        projects={"liver": ProjectRole.RESEARCHER, "lung": ProjectRole.RESEARCHER},
    )
    add_user(runtime, "vic", projects={"lung": ProjectRole.VIEWER})
    client = TestClient(build_app(runtime))
    tokens = {
        name: auth_for(client, name) for name in ("root", "alice", "bob", "olga", "carol", "vic")
    }
    for rule in (
        {"project": "liver", "calling_ae_title": "LIVER_CT"},
        {"project": "lung", "field": "StudyDescription", "pattern": "*lung*"},
    ):
        response = client.post("/api/projects/rules", json=rule, headers=tokens["root"])
        assert response.status_code == 201, response.text
    spool = tmp_path / "spool"
    series = {
        "liver": ingest_series(runtime, spool, series_datasets(1), "LIVER_CT"),
        "lung": ingest_series(
            runtime, spool, series_datasets(2, StudyDescription="Chest LUNG screening")
        ),
        "other": ingest_series(
            runtime, spool, series_datasets(3, StudyDescription="Knee"), "MR_ROOM"
        ),
    }
    yield Site(runtime, client, tokens, series)
    runtime.close()
