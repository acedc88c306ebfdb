"""The PACS API and page with auth on: site admins only, clear errors for bad input,
saved queries kept in the catalog and audited. No peer is reached here (see
test_pacs_retrieve.py for Orthanc)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy import inspect
from tests.base.support import add_user, auth_for, install_key, site_settings
from tests.ui.pages.support import browser_login

from jip.app import build_app
from jip.base import users as users_module
from jip.base.keys import SigningKeys
from jip.base.schema import ProjectRole
from jip.config import DicomPeer
from jip.db import make_engine
from jip.migrations import alembic_config, upgrade
from jip.runtime import build_runtime

PACS = DicomPeer(ae_title="PACS", host="127.0.0.1", port=1)  # nothing listens on port 1
QUERY = {"patient_name": "Doe", "study_date_from": "2024-01-01", "modality": "CT"}
SAVED = {"name": "nightly ct", "peer": "pacs", "project": "trial", "run_at": "02:30"}


@pytest.fixture
def api(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[TestClient, dict[str, Any]]]:
    monkeypatch.setattr(users_module, "DEFAULT_COST", users_module.ScryptCost(n=2**10, r=8, p=1))
    users_module._dummy_hash.cache_clear()
    keys = SigningKeys(tmp_path / "issuer-key")
    keys.private_key  # noqa: B018  (creates the key file)
    settings = site_settings(tmp_path / "data", enabled=True)
    settings = settings.model_copy(
        update={"store": settings.store.model_copy(update={"peers": {"pacs": PACS}})}
    )
    install_key(settings, keys.path)
    runtime = build_runtime(settings)
    add_user(runtime, "root", admin=True)
    add_user(runtime, "olga", projects={"trial": ProjectRole.OWNER})
    add_user(runtime, "rita", projects={"trial": ProjectRole.RESEARCHER})
    client = TestClient(build_app(runtime))
    tokens = {name: auth_for(client, name) for name in ("root", "olga", "rita")}
    try:
        yield client, tokens
    finally:
        runtime.close()


CALLS = [
    ("POST", "/api/dicom/peers/pacs/studies", QUERY),
    (
        "POST",
        "/api/dicom/retrievals",
        {"peer": "pacs", "project": "trial", "study_instance_uids": ["1.2.3"]},
    ),
    ("GET", "/api/dicom/retrievals", None),
    ("GET", "/api/dicom/retrievals/0123", None),
    ("GET", "/api/dicom/saved-queries", None),
    ("POST", "/api/dicom/saved-queries", SAVED),
    ("DELETE", "/api/dicom/saved-queries/1", None),
    ("POST", "/api/dicom/saved-queries/1/run", None),
]


@pytest.mark.parametrize("user", ["olga", "rita"])
def test_project_owners_and_researchers_may_not_query_or_retrieve(
    api: tuple[TestClient, dict[str, Any]], user: str
) -> None:
    client, tokens = api
    for method, url, body in CALLS:
        response = client.request(method, url, json=body, headers=tokens[user])
        assert response.status_code == 403, f"{method} {url}: {response.text}"
    assert client.get("/api/dicom/saved-queries", headers=tokens["root"]).json() == []
    browser = TestClient(client.app)
    browser_login(browser, user)
    page = browser.get("/ui/pacs")
    assert page.status_code == 403 and "for site admins" in page.text
    assert client.get("/api/dicom/retrievals").status_code == 401


def test_bad_query_fields_are_refused_naming_the_field(
    api: tuple[TestClient, dict[str, Any]],
) -> None:
    client, tokens = api
    root = tokens["root"]
    bad_date = client.post(
        "/api/dicom/peers/pacs/studies", json={"study_date_from": "1.1.2024"}, headers=root
    )
    assert bad_date.status_code == 422 and "YYYY-MM-DD" in bad_date.text
    separator = client.post(
        "/api/dicom/peers/pacs/studies", json={"patient_id": "A\\B"}, headers=root
    )
    assert separator.status_code == 422 and "patient_id" in separator.text
    unknown = client.post("/api/dicom/peers/nope/studies", json={}, headers=root)
    assert unknown.status_code == 404 and "known peers: pacs" in unknown.json()["detail"]
    down = client.post("/api/dicom/peers/pacs/studies", json=QUERY, headers=root)
    assert down.status_code == 503 and "PACS@127.0.0.1:1" in down.json()["detail"]


def test_retrieving_needs_an_existing_project_and_studies(
    api: tuple[TestClient, dict[str, Any]],
) -> None:
    client, tokens = api
    body = {"peer": "pacs", "project": "nope", "study_instance_uids": ["1.2.3"]}
    response = client.post("/api/dicom/retrievals", json=body, headers=tokens["root"])
    assert response.status_code == 404 and "nope" in response.text
    not_a_uid = {**body, "project": "trial", "study_instance_uids": ["1.2.x"]}
    refused = client.post("/api/dicom/retrievals", json=not_a_uid, headers=tokens["root"])
    assert refused.status_code == 400 and "'1.2.x' is not a valid DICOM UID" in refused.text
    empty = {**body, "project": "trial", "study_instance_uids": []}
    assert (
        client.post("/api/dicom/retrievals", json=empty, headers=tokens["root"]).status_code == 422
    )
    assert client.get("/api/dicom/retrievals", headers=tokens["root"]).json() == []


def test_a_retrieval_from_an_unreachable_peer_ends_failed_saying_why(
    api: tuple[TestClient, dict[str, Any]],
) -> None:
    client, tokens = api
    body = {"peer": "pacs", "project": "trial", "study_instance_uids": ["1.2.3"]}
    created = client.post("/api/dicom/retrievals", json=body, headers=tokens["root"])
    assert created.status_code == 202, created.text
    url = f"/api/dicom/retrievals/{created.json()['id']}"
    state = _until_finished(client, url, tokens["root"])
    assert state["state"] == "failed" and "PACS@127.0.0.1:1" in state["error"]
    actions = [e["action"] for e in client.get("/api/audit", headers=tokens["root"]).json()]
    assert "dicom.retrieve" in actions and "dicom.retrieve.finished" in actions


def _until_finished(client: TestClient, url: str, headers: dict[str, str]) -> dict[str, Any]:
    import time

    for _ in range(600):  # the background thread only has to fail to connect
        state: dict[str, Any] = client.get(url, headers=headers).json()
        if state["state"] not in ("queued", "running"):
            return state
        time.sleep(0.05)
    pytest.fail(f"{url} did not finish: {state}")


def test_saved_queries_are_kept_run_on_demand_removed_and_audited(
    api: tuple[TestClient, dict[str, Any]],
) -> None:
    client, tokens = api
    root = tokens["root"]
    created = client.post("/api/dicom/saved-queries", json={**SAVED, "query": QUERY}, headers=root)
    assert created.status_code == 201, created.text
    saved = created.json()
    assert saved["query"]["study_date_from"] == "20240101"
    assert saved["next_run_at"].endswith("Z") and "T02:30:00" in saved["next_run_at"]
    again = client.post("/api/dicom/saved-queries", json=SAVED, headers=root)
    assert again.status_code == 409 and "choose another name" in again.text
    bad_time = client.post(
        "/api/dicom/saved-queries", json={**SAVED, "name": "x", "run_at": "25:00"}, headers=root
    )
    assert bad_time.status_code == 422 and "HH:MM" in bad_time.text
    no_peer = client.post(
        "/api/dicom/saved-queries", json={**SAVED, "name": "y", "peer": "nope"}, headers=root
    )
    assert no_peer.status_code == 404

    due = client.post(f"/api/dicom/saved-queries/{saved['id']}/run", headers=root)
    assert due.status_code == 202 and due.json()["next_run_at"] < saved["next_run_at"]
    assert client.delete(f"/api/dicom/saved-queries/{saved['id']}", headers=root).status_code == 204
    assert client.get("/api/dicom/saved-queries", headers=root).json() == []
    gone = client.post(f"/api/dicom/saved-queries/{saved['id']}/run", headers=root)
    assert gone.status_code == 404
    entries = client.get("/api/audit", params={"action": "dicom."}, headers=root).json()
    assert {"dicom.saved_query.add", "dicom.saved_query.run_now", "dicom.saved_query.remove"} <= {
        e["action"] for e in entries
    }
    assert all("Doe" not in str(e["detail"]) for e in entries)  # no patient data in the log


def test_a_peer_added_at_runtime_cannot_ask_for_c_get_yet(
    api: tuple[TestClient, dict[str, Any]],
) -> None:
    client, tokens = api
    body = {"ae_title": "P2", "host": "10.0.0.2", "port": 104, "retrieve": "get"}
    response = client.put("/api/dicom/peers/p2", json=body, headers=tokens["root"])
    assert response.status_code == 400 and "store.peers" in response.text
    listed = client.get("/api/dicom/peers", headers=tokens["root"]).json()
    assert [(p["name"], p["retrieve"]) for p in listed] == [("pacs", "move")]


def test_migration_0012_creates_and_drops_the_pacs_tables(catalog_url: str) -> None:
    upgrade(catalog_url)
    engine = make_engine(catalog_url)
    try:
        config = alembic_config(catalog_url)
        command.downgrade(config, "0011_fed_bundles_vocabulary")
        assert not inspect(engine).has_table("dicom_retrievals")
        assert not inspect(engine).has_table("dicom_saved_queries")
        command.upgrade(config, "head")
        assert inspect(engine).has_table("dicom_saved_queries")
    finally:
        engine.dispose()


def test_the_page_shows_why_a_query_failed_and_the_saved_queries(
    api: tuple[TestClient, dict[str, Any]],
) -> None:
    client, tokens = api
    assert client.post("/api/dicom/saved-queries", json=SAVED, headers=tokens["root"]).is_success
    browser = TestClient(client.app)
    browser_login(browser, "root")
    page = browser.get("/ui/pacs", params={"search": "1", "peer": "pacs", "patient_id": "X"})
    assert page.status_code == 200
    assert 'role="alert"' in page.text and "PACS@127.0.0.1:1" in page.text
    assert "nightly ct" in page.text and 'value="X"' in page.text
    saved = browser.get("/ui/pacs/saved/1")
    assert saved.status_code == 200 and "Every day at 02:30 UTC" in saved.text
    missing = browser.get("/ui/pacs/retrievals/nope")
    assert missing.status_code == 404 and "no retrieval" in missing.text


def test_jip_up_runs_the_saved_query_scheduler_in_the_all_and_indexer_roles(
    tmp_path: Path,
) -> None:
    from jip.config import Settings
    from jip.embedded import Role, service_components

    settings = Settings(data_dir=tmp_path, flow={"airflow_enabled": False})
    runtime = build_runtime(settings)
    try:
        for role in Role:
            names = {c.name for c in service_components(settings, role, runtime)}
            assert ("pacs-scheduler" in names) == (role in (Role.ALL, Role.INDEXER)), role
    finally:
        runtime.close()
