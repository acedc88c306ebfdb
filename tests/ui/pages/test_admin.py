"""The admin pages (/ui/admin/...), the site status API and the viewer link setting."""

from __future__ import annotations

import csv
import io
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pynetdicom import AE, evt
from tests.base.support import PASSWORD, add_user, auth_for
from tests.fakes.workflow_engine import FakeEngine, series_workflow
from tests.ui.pages.support import browser_login, csrf_of, flash_of, post_form

from jip.base.schema import ProjectRole
from jip.meta.indexer import Indexer
from jip.runtime import Runtime
from jip.samples import synthetic_site, write_datasets
from jip.ui.routes import templates
from jip.ui.viewer import format_viewer_url

ADMIN_ONLY = [
    "/ui/admin/users",
    "/ui/admin/peers",
    "/ui/admin/rules",
    "/ui/admin/audit",
    "/ui/admin/audit/export",
]
VERIFICATION = "1.2.840.10008.1.1"


@pytest.fixture
def series_uids(runtime: Runtime, tmp_path: Path) -> list[str]:
    """Four indexed series in the default project; rita researches there, ada is admin."""
    datasets = synthetic_site(patients=2, studies_per_patient=1, series_per_study=2, slices=2,
                              rows=16, columns=16, seed=5)  # fmt: skip
    for path in write_datasets(datasets, tmp_path / "spool"):
        runtime.ingestor.ingest_file(path)
    Indexer(catalog=runtime.catalog, storage=runtime.storage, index=runtime.index).run_once()
    add_user(runtime, "rita", projects={"default": ProjectRole.RESEARCHER})
    add_user(runtime, "ada", admin=True)
    return sorted({str(ds.SeriesInstanceUID) for ds in datasets})


@pytest.fixture
def admin(series_uids: list[str], client: TestClient) -> TestClient:
    browser_login(client, "ada")
    return client


# -- users, projects and roles ----------------------------------------------------------------
def test_admin_creates_a_user_and_project_and_assigns_a_role_that_opens_its_series(
    admin: TestClient, app: FastAPI, runtime: Runtime, series_uids: list[str]
) -> None:
    page = post_form(admin, "/ui/admin/users", username="nina", password=PASSWORD)
    assert flash_of(page) == "user nina created"
    assert "<td>nina</td>" in page
    page = post_form(admin, "/ui/admin/projects", name="trial", description="A trial")
    assert flash_of(page) == "project trial created"
    page = post_form(admin, "/ui/admin/projects/trial/members", username="nina", role="viewer")
    assert "nina is viewer in trial" in flash_of(page)
    assert runtime.identity.projects.get("trial").members == {"nina": ProjectRole.VIEWER}

    token = auth_for(admin, "ada")
    assigned = admin.put(f"/api/projects/trial/series/{series_uids[0]}", headers=token)
    assert assigned.status_code == 200, assigned.text
    Indexer(catalog=runtime.catalog, storage=runtime.storage, index=runtime.index).run_once()

    nina = TestClient(app)
    browser_login(nina, "nina")
    explore = nina.get("/ui/explore").text
    assert "1 series" in explore and series_uids[0] in explore
    assert all(uid not in explore for uid in series_uids[1:])


def test_disable_reset_password_and_remove_a_user(admin: TestClient, runtime: Runtime) -> None:
    add_user(runtime, "tom")
    users = runtime.identity.users
    assert flash_of(post_form(admin, "/ui/admin/users/tom/disable")) == "user tom disabled"
    assert users.get("tom").disabled
    assert flash_of(post_form(admin, "/ui/admin/users/tom/enable")) == "user tom enabled"
    assert not users.get("tom").disabled
    page = post_form(admin, "/ui/admin/users/tom/password", password="a new long password")
    assert "password of tom set" in flash_of(page)
    fresh = TestClient(admin.app)
    assert (
        fresh.post(
            "/auth/token",
            data={
                "grant_type": "password",
                "client_id": "jip-cli",
                "username": "tom",
                "password": "a new long password",
            },
        ).status_code
        == 200
    )
    assert flash_of(post_form(admin, "/ui/admin/users/tom/remove")) == "user tom removed"
    assert "tom" not in [u.username for u in users.list()]


def test_an_api_error_is_shown_on_the_page_not_a_500(admin: TestClient) -> None:
    page = post_form(admin, "/ui/admin/users", username="rita", password=PASSWORD)
    assert "(HTTP 409)" in flash_of(page) and 'class="error flash"' in page
    page = post_form(admin, "/ui/admin/projects/nope/members", username="rita", role="viewer")
    assert "(HTTP 404)" in flash_of(page)
    # The message is shown once.
    assert "flash" not in admin.get("/ui/admin/projects").text


def test_admin_forms_refuse_a_post_without_the_csrf_token(
    admin: TestClient, runtime: Runtime
) -> None:
    for data in ({"username": "eve", "password": PASSWORD},
                 {"username": "eve", "password": PASSWORD, "csrf_token": "guess"}):  # fmt: skip
        refused = admin.post("/ui/admin/users", data=data, follow_redirects=False)
        assert refused.status_code == 403
    refused = admin.post(
        "/ui/admin/peers", data={"name": "x", "ae_title": "X", "host": "127.0.0.1", "port": "104"}
    )
    assert refused.status_code == 403
    assert "eve" not in [u.username for u in runtime.identity.users.list()]
    assert admin.get("/api/dicom/peers", headers=auth_for(admin, "ada")).json() == []


def test_non_admins_get_their_projects_and_403_elsewhere(
    series_uids: list[str], client: TestClient
) -> None:
    browser_login(client, "rita")
    overview = client.get("/ui/admin", follow_redirects=False)
    assert overview.headers["location"] == "/ui/admin/projects"
    projects = client.get("/ui/admin/projects")
    assert projects.status_code == 200 and "default" in projects.text
    assert "New project" not in projects.text
    for url in ADMIN_ONLY:
        assert client.get(url).status_code == 403, url
    csrf = csrf_of(projects.text)
    refused = client.post("/ui/admin/users", data={"username": "eve", "csrf_token": csrf})
    assert refused.status_code == 403
    token = auth_for(client, "rita")
    peer = {"ae_title": "PACS", "host": "127.0.0.1", "port": 104}
    assert client.put("/api/dicom/peers/pacs", json=peer, headers=token).status_code == 403
    assert client.delete("/api/dicom/peers/pacs", headers=token).status_code == 403
    assert client.get("/api/admin/status", headers=token).status_code == 403


# -- DICOM peers ------------------------------------------------------------------------------
@pytest.fixture
def echo_scp() -> Iterator[int]:
    """A pynetdicom Verification SCP (AE title ECHOSCP) on a free port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    ae = AE(ae_title="ECHOSCP")
    ae.add_supported_context(VERIFICATION)
    server = ae.start_server(("127.0.0.1", port), block=False,
                             evt_handlers=[(evt.EVT_C_ECHO, lambda _event: 0x0000)])  # fmt: skip
    assert server is not None
    yield port
    server.shutdown()


def test_a_peer_added_in_the_ui_is_echoed_changed_and_deleted(
    admin: TestClient, echo_scp: int
) -> None:
    token = auth_for(admin, "ada")
    page = post_form(admin, "/ui/admin/peers", name="scp", ae_title="ECHOSCP",
                     host="127.0.0.1", port=str(echo_scp))  # fmt: skip
    assert flash_of(page) == "peer scp saved"
    assert "<code>ECHOSCP</code>" in page and "added here" in page
    echoed = admin.post("/api/dicom/peers/scp/echo", headers=token)
    assert echoed.status_code == 200 and echoed.json()["status"] == 0
    assert re.fullmatch(r"C-ECHO scp: success in \d+ ms",
                        flash_of(post_form(admin, "/ui/admin/peers/scp/echo")))  # fmt: skip
    assert 'value="ECHOSCP"' in admin.get("/ui/admin/peers", params={"edit": "scp"}).text

    post_form(admin, "/ui/admin/peers", name="scp", ae_title="ECHOSCP", host="127.0.0.1",
              port="1")  # fmt: skip
    assert admin.get("/api/dicom/peers", headers=token).json()[0]["port"] == 1
    failed = flash_of(post_form(admin, "/ui/admin/peers/scp/echo"))
    assert "(HTTP 503)" in failed or "(HTTP 403)" in failed, failed

    assert flash_of(post_form(admin, "/ui/admin/peers/scp/delete")) == "peer scp removed"
    assert admin.get("/api/dicom/peers", headers=token).json() == []
    actions = [e["action"] for e in admin.get("/api/audit", headers=token).json()]
    assert "dicom.peer.set" in actions and "dicom.peer.remove" in actions


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"ae_title": "BAD\\AE", "host": "h", "port": 104}, "backslash"),
        ({"ae_title": "    ", "host": "h", "port": 104}, "all spaces"),
        ({"ae_title": "A" * 17, "host": "h", "port": 104}, "at most 16"),
        ({"ae_title": "TAB\tAE", "host": "h", "port": 104}, "control"),
        ({"ae_title": "PACS", "host": "", "port": 104}, "host"),
        ({"ae_title": "PACS", "host": "a host", "port": 104}, "host"),
        ({"ae_title": "PACS", "host": "h", "port": 0}, "port"),
        ({"ae_title": "PACS", "host": "h", "port": 65536}, "port"),
    ],
)
def test_peer_put_rejects_bad_values_with_a_clear_message(
    admin: TestClient, body: dict[str, object], message: str
) -> None:
    response = admin.put("/api/dicom/peers/pacs", json=body, headers=auth_for(admin, "ada"))
    assert response.status_code == 422
    assert message in response.text


def test_peer_names_are_checked_and_the_ui_shows_field_errors(admin: TestClient) -> None:
    peer = {"ae_title": "PACS", "host": "h", "port": 104}
    response = admin.put("/api/dicom/peers/..bad", json=peer, headers=auth_for(admin, "ada"))
    assert response.status_code == 400 and "peer name" in response.json()["detail"]
    page = post_form(admin, "/ui/admin/peers", name="pacs", ae_title="BAD\\AE", host="h",
                     port="104")  # fmt: skip
    assert "ae_title" in flash_of(page) and "backslash" in flash_of(page)


# -- auto-rules -------------------------------------------------------------------------------
def test_rules_are_created_disabled_enabled_and_deleted(admin: TestClient, app: FastAPI) -> None:
    app.state.runtime.workflow_engine = FakeEngine(series_workflow("organ-seg", "fake-op"))
    page = admin.get("/ui/admin/rules").text
    assert "<option>organ-seg</option>" in page
    page = post_form(admin, "/ui/admin/rules", name="ct-seg", dag_id="organ-seg",
                     query='{"term": {"Modality": "CT"}}', params="{}", enabled="true")  # fmt: skip
    assert flash_of(page) == "rule ct-seg created"
    token = auth_for(admin, "ada")
    [rule] = admin.get("/api/flow/rules", headers=token).json()
    assert (rule["dag_id"], rule["query"], rule["enabled"]) == (
        "organ-seg",
        {"term": {"Modality": "CT"}},
        True,
    )
    assert flash_of(post_form(admin, "/ui/admin/rules/ct-seg/disable")) == "rule ct-seg disabled"
    assert admin.get("/api/flow/rules", headers=token).json()[0]["enabled"] is False
    post_form(admin, "/ui/admin/rules/ct-seg/enable")
    assert admin.get("/api/flow/rules", headers=token).json()[0]["enabled"] is True
    bad = post_form(admin, "/ui/admin/rules", name="broken", dag_id="organ-seg", query="{nope")
    assert "query: not valid JSON" in flash_of(bad)
    assert flash_of(post_form(admin, "/ui/admin/rules/ct-seg/delete")) == "rule ct-seg deleted"
    assert admin.get("/api/flow/rules", headers=token).json() == []


def test_rules_page_works_when_the_workflow_engine_is_away(admin: TestClient, app: FastAPI) -> None:
    engine = FakeEngine()
    engine.available = False
    app.state.runtime.workflow_engine = engine
    page = admin.get("/ui/admin/rules")
    assert page.status_code == 200
    assert "Workflows could not be listed" in page.text and 'name="dag_id"' in page.text


# -- audit log ---------------------------------------------------------------------------------
def test_audit_page_filters_and_exports_csv(admin: TestClient) -> None:
    post_form(admin, "/ui/admin/users", username="nina", password=PASSWORD)
    page = admin.get("/ui/admin/audit", params={"action": "user.create", "since": "2000-01-01"})
    assert page.status_code == 200
    rows = re.findall(r"<td>(user\.create|login)</td>", page.text)
    assert rows == ["user.create"]
    assert "/ui/admin/audit/export?action=user.create" in page.text
    none = admin.get("/ui/admin/audit", params={"username": "nobody"}).text
    assert "No entries match." in none
    bad = admin.get("/ui/admin/audit", params={"since": "yesterday"})
    assert bad.status_code == 200 and "since" in bad.text and 'role="alert"' in bad.text

    export = admin.get("/ui/admin/audit/export", params={"action": "user.create"})
    assert export.status_code == 200
    assert export.headers["content-type"].startswith("text/csv")
    assert export.headers["content-disposition"].startswith("attachment")
    rows_out = list(csv.DictReader(io.StringIO(export.text)))
    assert [(r["action"], r["target"]) for r in rows_out] == [("user.create", "nina")]
    audit = admin.get("/ui/admin/audit", params={"action": "audit.export"}).text
    assert "<td>audit.export</td>" in audit  # the export itself is audited


# -- status --------------------------------------------------------------------------------------
def test_admin_status_api_reports_counts_backends_backlog_and_airflow(
    admin: TestClient, app: FastAPI, runtime: Runtime
) -> None:
    app.state.runtime.workflow_engine = FakeEngine()
    app.state.readiness = [lambda: None, lambda: "waiting for the indexer"]
    body = admin.get("/api/admin/status", headers=auth_for(admin, "ada")).json()
    counts = runtime.catalog.counts()
    assert body["catalog"]["instances"] == counts["instances"] == 8
    assert body["catalog"]["series"] == 4 and body["catalog"]["bytes"] > 8 * 16 * 16
    assert body["conflicts"] == 0
    assert body["storage_backend"]["kind"] == "file"
    assert body["catalog_backend"]["kind"] == body["index_backend"]["kind"] == "sqlite"
    assert body["index"] == {"pending": 0, "failed": 0, "documents": 4}
    assert body["ready"] is False
    assert [c["detail"] for c in body["components"]] == ["", "waiting for the indexer"]
    assert body["airflow"] == {"enabled": True, "reachable": True,
                               "health": {"scheduler": "healthy"}, "detail": ""}  # fmt: skip

    page = admin.get("/ui/admin").text
    assert "4 series, 8 instances" in page and "not ready" in page
    assert "waiting for the indexer" in page and "scheduler: healthy" in page


def test_backend_locations_hide_credentials() -> None:
    from jip.ui.status import backend

    pg = backend("postgresql://jip:secret@db:5432/jip?sslmode=require")
    assert pg.kind == "postgresql" and "secret" not in pg.location and "db:5432/jip" in pg.location
    s3 = backend("s3://bucket/blobs?endpoint=minio:9000&access_key=AK")
    assert (s3.kind, s3.location) == ("s3", "s3://bucket/blobs")


# -- viewer link ---------------------------------------------------------------------------------
def test_viewer_url_is_a_template_global_formatted_from_the_setting(
    app: FastAPI, runtime: Runtime
) -> None:
    template = templates.env.from_string("{{ viewer_url('1.2.3', '4.5') }}")
    request = SimpleNamespace(app=app)
    runtime.settings.ui.ohif.enabled = False  # neither a template nor OHIF: no link
    assert template.render(request=request) == "None"
    runtime.settings.ui.viewer_url_template = "/ohif/viewer?StudyInstanceUIDs={study}&s={series}"
    assert template.render(request=request) == "/ohif/viewer?StudyInstanceUIDs=1.2.3&amp;s=4.5"
    assert format_viewer_url("/v/{study}", "1.2 3", "x") == "/v/1.2%203"
    assert format_viewer_url(None, "1", "2") is None
