"""The data assignment page (/ui/admin/assignment) and the projects of a DICOM peer."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tests.base.support import add_user, auth_for
from tests.ui.pages.support import browser_login, csrf_of, flash_of, post_form

from jip.base.schema import ProjectRole
from jip.runtime import Runtime
from jip.samples import synthetic_site, write_datasets
from jip.store import SeriesProjects

RULES = "/ui/admin/assignment/rules"
SERIES = "/ui/admin/assignment/series"


def ingest(runtime: Runtime, folder: Path, calling_ae_title: str = "", seed: int = 9) -> list[str]:
    """One study of two series, sent by ``calling_ae_title``; its Series Instance UIDs."""
    datasets = synthetic_site(
        patients=1,
        studies_per_patient=1,
        series_per_study=2,
        slices=1,
        rows=16,
        columns=16,
        seed=seed,
    )
    for path in write_datasets(datasets, folder):
        runtime.ingestor.ingest_file(path, calling_ae_title)
    return sorted({str(ds.SeriesInstanceUID) for ds in datasets})


@pytest.fixture
def series_uids(runtime: Runtime, tmp_path: Path) -> list[str]:
    """Two series in the default project; olga owns "trial" and may read default."""
    uids = ingest(runtime, tmp_path / "spool")
    add_user(runtime, "ada", admin=True)
    add_user(runtime, "olga", projects={"trial": ProjectRole.OWNER, "default": ProjectRole.VIEWER})
    add_user(runtime, "rita", projects={"default": ProjectRole.RESEARCHER})
    return uids


@pytest.fixture
def admin(series_uids: list[str], client: TestClient) -> TestClient:
    browser_login(client, "ada")
    return client


def projects_of(runtime: Runtime, series_uid: str) -> set[str]:
    return SeriesProjects(runtime.engine).projects_of([series_uid])[series_uid]


def test_admin_creates_disables_enables_and_deletes_an_assignment_rule(admin: TestClient) -> None:
    page = post_form(
        admin,
        RULES,
        project="trial",
        calling_ae_title=" CT_WARD ",
        field="Modality",
        pattern="CT",
        enabled="true",
    )
    assert flash_of(page) == "rule 1 created: matching series go to trial"
    assert "<code>CT_WARD</code>" in page and "<code>CT</code>" in page
    token = auth_for(admin, "ada")
    [rule] = admin.get("/api/projects/rules", headers=token).json()
    assert rule == {
        "id": 1,
        "project": "trial",
        "calling_ae_title": "CT_WARD",
        "field": "Modality",
        "pattern": "CT",
        "enabled": True,
    }

    assert flash_of(post_form(admin, f"{RULES}/1/disable")) == "rule 1 disabled"
    assert admin.get("/api/projects/rules/1", headers=token).json()["enabled"] is False
    assert flash_of(post_form(admin, f"{RULES}/1/enable")) == "rule 1 enabled"
    assert admin.get("/api/projects/rules/1", headers=token).json()["enabled"] is True
    assert flash_of(post_form(admin, f"{RULES}/1/delete")) == "rule 1 deleted"
    assert admin.get("/api/projects/rules", headers=token).json() == []
    assert "No rules" in admin.get("/ui/admin/assignment").text


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"project": "trial"}, "needs a calling_ae_title, a field, or both (HTTP 400)"),
        ({"project": "trial", "field": "Modality"}, "needs a pattern"),
        ({"project": "nope", "calling_ae_title": "CT"}, "(HTTP 404)"),
    ],
)
def test_a_rule_the_api_refuses_is_explained_on_the_page(
    admin: TestClient, fields: dict[str, str], message: str
) -> None:
    page = post_form(admin, RULES, **fields)
    assert message in flash_of(page) and 'class="error flash"' in page
    assert admin.get("/api/projects/rules", headers=auth_for(admin, "ada")).json() == []


def test_a_rule_made_in_the_ui_assigns_the_next_series_its_ae_sends(
    admin: TestClient, runtime: Runtime, tmp_path: Path
) -> None:
    post_form(admin, RULES, project="trial", calling_ae_title="MOD_T", enabled="true")
    from_mod_t = ingest(runtime, tmp_path / "t", calling_ae_title="MOD_T", seed=21)
    from_other = ingest(runtime, tmp_path / "o", calling_ae_title="OTHER", seed=22)
    assert projects_of(runtime, from_mod_t[0]) == {"trial"}
    assert projects_of(runtime, from_other[0]) == {"default"}


def test_a_series_is_assigned_and_removed_by_hand(
    admin: TestClient, runtime: Runtime, series_uids: list[str]
) -> None:
    uid = series_uids[0]
    page = post_form(admin, SERIES, series_uid=f" {uid} ", project="trial")
    assert flash_of(page) == f"series {uid} is in default, trial"
    assert projects_of(runtime, uid) == {"default", "trial"}
    page = post_form(admin, f"{SERIES}/remove", series_uid=uid, project="trial")
    assert flash_of(page) == f"series {uid} removed from trial"
    assert projects_of(runtime, uid) == {"default"}
    assert "(HTTP 404)" in flash_of(
        post_form(admin, f"{SERIES}/remove", series_uid=uid, project="trial")
    )
    assert "(HTTP 404)" in flash_of(post_form(admin, SERIES, series_uid="1.2.3", project="trial"))


def test_project_owners_assign_by_hand_but_neither_see_nor_make_rules(
    client: TestClient, runtime: Runtime, series_uids: list[str]
) -> None:
    browser_login(client, "olga")
    page = client.get("/ui/admin/assignment")
    assert page.status_code == 200 and "Data assignment" in page.text
    assert "New rule" not in page.text and "<option>trial</option>" in page.text
    assert "<option>default</option>" not in page.text  # she only views default
    refused = client.post(
        RULES, data={"project": "trial", "calling_ae_title": "X", "csrf_token": csrf_of(page.text)}
    )
    assert refused.status_code == 403
    page_text = post_form(client, SERIES, series_uid=series_uids[1], project="trial")
    assert flash_of(page_text) == f"series {series_uids[1]} is in default, trial"
    refused_page = post_form(
        client, f"{SERIES}/remove", series_uid=series_uids[1], project="default"
    )
    assert "(HTTP 403)" in flash_of(refused_page)
    assert projects_of(runtime, series_uids[1]) == {"default", "trial"}


def test_members_who_own_no_project_get_a_403_and_no_link(
    client: TestClient, series_uids: list[str]
) -> None:
    browser_login(client, "rita")
    assert client.get("/ui/admin/assignment").status_code == 403
    assert "Data assignment" not in client.get("/ui/admin/projects").text


# -- what a peer sees when it queries us -------------------------------------------------------
def test_peer_projects_are_ticked_in_the_peers_form(admin: TestClient) -> None:
    token = auth_for(admin, "ada")
    csrf = csrf_of(admin.get("/ui/admin/peers").text)
    form = {
        "name": "ward",
        "ae_title": "WARD",
        "host": "ward.local",
        "port": "104",
        "projects": ["trial", "default"],
        "csrf_token": csrf,
    }
    saved = admin.post("/ui/admin/peers", data=form, follow_redirects=False)
    assert saved.status_code == 303
    [peer] = admin.get("/api/dicom/peers", headers=token).json()
    assert peer["projects"] == ["trial", "default"]
    page = admin.get("/ui/admin/peers").text
    assert "<td>trial, default</td>" in page
    edit = admin.get("/ui/admin/peers", params={"edit": "ward"}).text
    assert 'value="trial" checked' in edit and 'value="default" checked' in edit

    post_form(admin, "/ui/admin/peers", name="ward", ae_title="WARD", host="ward.local", port="104")
    assert admin.get("/api/dicom/peers", headers=token).json()[0]["projects"] == []
    assert "<td>all series</td>" in admin.get("/ui/admin/peers").text


def test_peer_projects_must_exist_and_be_project_names(admin: TestClient) -> None:
    token = auth_for(admin, "ada")
    body = {"ae_title": "WARD", "host": "h", "port": 104, "projects": ["gone"]}
    unknown = admin.put("/api/dicom/peers/ward", json=body, headers=token)
    assert unknown.status_code == 404 and "gone" in unknown.text
    bad = admin.put(
        "/api/dicom/peers/ward", json={**body, "projects": ["Not A Name"]}, headers=token
    )
    assert bad.status_code == 422 and "project name" in bad.text
    assert admin.get("/api/dicom/peers", headers=token).json() == []
