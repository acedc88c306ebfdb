"""Deleting a study or series with authentication on: a series shared by two projects.

``lena`` owns ``liver`` only; a series in ``liver`` and ``lung`` leaves ``liver`` when
she deletes it and stays, files and all, for ``lung``. ``olga`` owns both and deletes
it for good.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tests.base.support import (
    DW,
    Stored,
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
from jip.runtime import Runtime, build_runtime
from jip.store import SeriesProjects

OWNER, RESEARCHER = ProjectRole.OWNER, ProjectRole.RESEARCHER


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Runtime, TestClient]]:
    monkeypatch.setattr(users_module, "DEFAULT_COST", users_module.ScryptCost(n=2**10, r=8, p=1))
    keys = SigningKeys(tmp_path / "key")
    keys.private_key  # noqa: B018  (creates the key file)
    settings = site_settings(tmp_path / "data")
    install_key(settings, keys.path)
    runtime = build_runtime(settings)
    add_user(runtime, "lena", projects={"liver": OWNER, "lung": RESEARCHER})
    add_user(runtime, "olga", projects={"liver": OWNER, "lung": OWNER})
    add_user(runtime, "bob", projects={"lung": RESEARCHER})
    try:
        yield runtime, TestClient(build_app(runtime))
    finally:
        runtime.close()


def _shared(runtime: Runtime, spool: Path, index: int) -> Stored:
    stored = ingest_series(runtime, spool, series_datasets(index))
    projects = SeriesProjects(runtime.engine)
    projects.assign(stored.series, "liver")
    projects.assign(stored.series, "lung")
    projects.unassign(stored.series, runtime.settings.store.default_project)
    return stored


def _projects(runtime: Runtime, stored: Stored) -> set[str]:
    return SeriesProjects(runtime.engine).projects_of([stored.series])[stored.series]


@pytest.mark.parametrize("route", ["series", "study"])
def test_an_owner_of_one_project_removes_a_shared_series_only_from_it(
    site: tuple[Runtime, TestClient], tmp_path: Path, route: str
) -> None:
    runtime, client = site
    shared = _shared(runtime, tmp_path / "spool", 1)
    path = shared.path if route == "series" else f"{DW}/studies/{shared.study}"
    bob = auth_for(client, "bob")
    assert client.delete(path, headers=bob).status_code == 403  # a researcher
    response = client.delete(path, headers=auth_for(client, "lena"))
    assert response.status_code == 204, response.text
    assert _projects(runtime, shared) == {"lung"}
    assert runtime.catalog.counts()["instances"] == len(shared.sops)
    assert client.get(f"{shared.path}/metadata", headers=bob).status_code == 200
    for sop in shared.sops:
        stored = runtime.catalog.instance(sop)
        assert runtime.storage.exists(stored.blob_key)


def test_an_owner_of_every_project_of_the_series_deletes_it(
    site: tuple[Runtime, TestClient], tmp_path: Path
) -> None:
    runtime, client = site
    shared = _shared(runtime, tmp_path / "spool", 2)
    keys = [runtime.catalog.instance(sop).blob_key for sop in shared.sops]
    response = client.delete(shared.path, headers=auth_for(client, "olga"))
    assert response.status_code == 204, response.text
    assert runtime.catalog.counts()["instances"] == 0
    assert not any(runtime.storage.exists(key) for key in keys)
    assert client.get(shared.path, headers=auth_for(client, "olga")).status_code == 404
