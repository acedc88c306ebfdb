"""The web UI's pages: cookie session from the browser login, CSRF, security headers."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import jwt
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from tests.base.support import PASSWORD, add_user, auth_for
from tests.fakes.workflow_engine import FakeEngine, series_workflow
from tests.ui.pages.support import browser_login, csrf_of

from jip.base.auth import is_ui
from jip.base.schema import ProjectRole
from jip.flow.engine import RunState, TaskState
from jip.meta.indexer import Indexer
from jip.runtime import Runtime
from jip.samples import synthetic_site, write_datasets

PROJECT = "default"  # store.default_project
PAGES = ["/ui/explore", "/ui/cohorts", "/ui/admin"]


@pytest.fixture
def site(runtime: Runtime, tmp_path: Path) -> Runtime:
    datasets = synthetic_site(
        patients=2, studies_per_patient=1, series_per_study=2, slices=2, rows=16, columns=16, seed=3
    )
    for path in write_datasets(datasets, tmp_path / "spool"):
        runtime.ingestor.ingest_file(path)
    Indexer(catalog=runtime.catalog, storage=runtime.storage, index=runtime.index).run_once()
    # New series land in the site's default project; rita works in it.
    add_user(runtime, "rita", projects={PROJECT: ProjectRole.RESEARCHER})
    return runtime


@pytest.fixture
def logged_in(site: Runtime, client: TestClient) -> TestClient:
    browser_login(client, "rita")
    return client


@pytest.mark.parametrize("page", ["/", *PAGES])
def test_pages_without_a_session_redirect_to_the_login(client: TestClient, page: str) -> None:
    response = client.get(page, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] in ("/ui/login", "/ui/explore")


def test_every_ui_route_but_the_login_needs_a_session(client: TestClient, app: FastAPI) -> None:
    # Logout ends whatever is left of a session; it needs only the CSRF token.
    open_paths = {"/", "/ui/login", "/ui/callback", "/ui/logout", "/ui/static/{name}"}
    checked = 0
    for route in app.routes:
        if not isinstance(route, APIRoute) or not is_ui(route.path) or route.path in open_paths:
            continue
        path = re.sub(r"\{[^}]+\}", "1", route.path)
        for method in sorted(route.methods - {"HEAD"}):
            response = client.request(method, path, follow_redirects=False)
            assert response.status_code == 303, (method, path, response.status_code)
            assert response.headers["location"] == "/ui/login", (method, path)
            checked += 1
    assert checked >= 15


def test_a_forged_session_cookie_redirects_to_the_login(client: TestClient) -> None:
    client.cookies.set("jip_session", "not-a-token")
    response = client.get("/ui/explore", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/login"


def test_login_sets_an_httponly_strict_session_cookie(site: Runtime, client: TestClient) -> None:
    start = client.get("/ui/login", follow_redirects=False)
    form = dict(parse_qsl(urlsplit(start.headers["location"]).query))
    submitted = client.post(
        "/auth/authorize",
        data={**form, "username": "rita", "password": PASSWORD},
        follow_redirects=False,
    )
    done = client.get(submitted.headers["location"], follow_redirects=False)
    cookies = done.headers.get_list("set-cookie")
    session = next(c for c in cookies if c.startswith("jip_session="))
    assert "HttpOnly" in session and "SameSite=strict" in session


def test_callback_with_a_wrong_state_opens_no_session(site: Runtime, client: TestClient) -> None:
    start = client.get("/ui/login", follow_redirects=False)
    form = dict(parse_qsl(urlsplit(start.headers["location"]).query))
    submitted = client.post(
        "/auth/authorize",
        data={**form, "state": "forged-state", "username": "rita", "password": PASSWORD},
        follow_redirects=False,
    )
    done = client.get(submitted.headers["location"], follow_redirects=False)
    assert done.status_code == 401
    assert "jip_session" not in client.cookies


@pytest.mark.parametrize("page", PAGES)
def test_pages_carry_security_headers(logged_in: TestClient, page: str) -> None:
    response = logged_in.get(page)
    assert response.status_code == 200, response.text
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "<script>" not in response.text  # no inline scripts


def test_explore_shows_facet_counts_and_filters(logged_in: TestClient) -> None:
    page = logged_in.get("/ui/explore").text
    assert "4 series" in page, re.findall(r"<h1>.*?</h1>", page, re.S)
    assert 'data-facet="Modality"' in page
    modality = re.findall(r'name="Modality" value="(\w+)"', page)
    assert modality
    filtered = logged_in.get("/ui/explore", params={"Modality": modality[0]}).text
    assert f'name="Modality" value="{modality[0]}" checked' in filtered


def test_explore_free_query_error_is_shown(logged_in: TestClient) -> None:
    response = logged_in.get("/ui/explore", params={"q": '{"nope": {}}'})
    assert response.status_code == 400
    assert "nope" in response.text


def test_save_cohort_needs_the_csrf_token(logged_in: TestClient) -> None:
    query = json.dumps({"term": {"Modality": "CT"}})
    refused = logged_in.post(
        "/ui/cohorts", data={"name": "ct", "query": query}, follow_redirects=False
    )
    assert refused.status_code == 403
    wrong = logged_in.post(
        "/ui/cohorts",
        data={"name": "ct", "query": query, "csrf_token": "guess"},
        follow_redirects=False,
    )
    assert wrong.status_code == 403
    assert "No cohorts yet" in logged_in.get("/ui/cohorts").text


def test_cohort_save_rename_freeze_export_import(logged_in: TestClient) -> None:
    csrf = csrf_of(logged_in.get("/ui/explore").text)
    query = json.dumps({"bool": {"filter": [{"terms": {"Modality": ["CT", "MR"]}}]}})
    saved = logged_in.post(
        "/ui/cohorts",
        data={"name": "all images", "query": query, "project": PROJECT, "csrf_token": csrf},
        follow_redirects=False,
    )
    assert saved.status_code == 303, saved.text
    cohort_url = saved.headers["location"]
    assert "all images" in logged_in.get("/ui/cohorts").text
    page = logged_in.get(cohort_url).text
    assert "4 series" in page and "/ui/thumb/" in page
    renamed = logged_in.post(
        f"{cohort_url}/rename", data={"name": "everything", "csrf_token": csrf}
    )
    assert "everything" in renamed.text
    frozen = logged_in.post(f"{cohort_url}/freeze", data={"csrf_token": csrf})
    assert "frozen" in frozen.text
    export = logged_in.get(f"{cohort_url}/export")
    assert export.headers["content-disposition"].startswith("attachment")
    document = export.json()
    imported = logged_in.post(
        "/ui/cohorts/import",
        data={"project": PROJECT, "name": "copy", "csrf_token": csrf},
        files={"document": ("c.json", json.dumps(document).encode())},
        follow_redirects=False,
    )
    assert imported.status_code == 303, imported.text
    assert imported.headers["location"] != cohort_url


def test_thumbnail_and_series_page_work_with_the_cookie(logged_in: TestClient) -> None:
    page = logged_in.get("/ui/explore").text
    thumb = re.search(r'src="(/ui/thumb/[^"]+)"', page)
    assert thumb
    image = logged_in.get(thumb.group(1))
    assert image.status_code == 200 and image.headers["content-type"].startswith("image/")
    series_url = re.search(r'href="(/ui/series/[^"]+)"', page)
    assert series_url
    series = logged_in.get(series_url.group(1), params={"window": "lung"})
    assert series.status_code == 200, series.text
    assert "Modality" in series.text
    frame = re.search(r'src="(/ui/frame/[^"]+)"', series.text)
    assert frame
    rendered = logged_in.get(frame.group(1).replace("&amp;", "&"))
    assert rendered.status_code == 200 and rendered.headers["content-type"].startswith("image/")


def test_the_dicomweb_api_still_needs_a_bearer_token(logged_in: TestClient) -> None:
    assert logged_in.get("/api/meta/cohorts").status_code == 401


def test_logout_needs_csrf_then_revokes_and_clears(logged_in: TestClient, site: Runtime) -> None:
    refused = logged_in.post("/ui/logout", follow_redirects=False)
    assert refused.status_code == 403
    csrf = csrf_of(logged_in.get("/ui/cohorts").text)
    refresh = logged_in.cookies.get("jip_refresh")
    out = logged_in.post("/ui/logout", data={"csrf_token": csrf}, follow_redirects=False)
    assert out.status_code == 303
    assert "jip_session" not in logged_in.cookies
    assert logged_in.get("/ui/explore", follow_redirects=False).status_code == 303
    reuse = logged_in.post(
        "/auth/token",
        data={"grant_type": "refresh_token", "client_id": "jip", "refresh_token": refresh},
    )
    assert reuse.status_code == 400


def test_admin_page_lists_users_and_audit_for_admins(site: Runtime, client: TestClient) -> None:
    add_user(site, "ada", admin=True)
    browser_login(client, "ada")
    page = client.get("/ui/admin").text
    assert "rita" in page and "Audit log" in page and PROJECT in page


def test_workflow_form_start_run_page_mark_done_and_cancel(
    logged_in: TestClient, app: FastAPI
) -> None:
    fake = FakeEngine(series_workflow("annotate-review", "fake-op", review=True))
    fake.workflows["annotate-review"].params_schema["properties"]["fake-op"]["properties"] = {
        "median_radius": {"type": "integer", "default": 2},
        "label": {"enum": ["liver", "spleen"], "default": "liver"},
    }
    app.state.runtime.workflow_engine = fake
    csrf = csrf_of(logged_in.get("/ui/explore").text)
    saved = logged_in.post(
        "/ui/cohorts",
        data={"name": "everything", "query": "{}", "project": PROJECT, "csrf_token": csrf},
        follow_redirects=False,
    )
    cohort_id = saved.headers["location"].rsplit("/", 1)[-1]
    assert "annotate-review" in logged_in.get("/ui/workflows").text
    form = logged_in.get("/ui/workflows/annotate-review", params={"cohort": cohort_id}).text
    assert 'name="fake-op.median_radius"' in form and "spleen" in form
    fields = {"cohort_id": cohort_id, "fake-op.median_radius": "3", "fake-op.label": "spleen"}
    refused = logged_in.post("/ui/workflows/annotate-review", data=fields, follow_redirects=False)
    assert refused.status_code == 403
    started = logged_in.post(
        "/ui/workflows/annotate-review", data={**fields, "csrf_token": csrf}, follow_redirects=False
    )
    assert started.status_code == 303, started.text
    run_url = started.headers["location"]
    run_id = run_url.rsplit("/", 1)[-1]
    conf = fake.runs[run_id].conf
    assert conf["fake-op"] == {"median_radius": 3, "label": "spleen"}, conf
    fake.set_run(run_id, RunState.RUNNING)
    fake.add_task(run_id, "series.annotate", TaskState.WAITING, 0, "0", log="waiting for you")
    page = logged_in.get(run_url).text
    assert "data-refresh-s" in page and "Mark annotate done" in page and "waiting" in page
    done = logged_in.post(f"{run_url}/tasks/annotate/done", data={"csrf_token": csrf})
    assert done.status_code == 200, done.text
    cancelled = logged_in.post(f"{run_url}/cancel", data={"csrf_token": csrf})
    assert "cancelled" in cancelled.text and "data-refresh-s" not in cancelled.text


def test_an_expired_session_is_renewed_with_the_refresh_cookie(logged_in: TestClient) -> None:
    old_refresh = logged_in.cookies.get("jip_refresh")
    domain = next(c.domain for c in logged_in.cookies.jar if c.name == "jip_session")
    expired = jwt.encode({"exp": 1}, "k" * 32, algorithm="HS256")
    logged_in.cookies.set("jip_session", expired, domain=domain)
    renewed = logged_in.get("/ui/cohorts", follow_redirects=False)
    assert renewed.status_code == 303 and renewed.headers["location"] == "/ui/cohorts"
    assert logged_in.cookies.get("jip_refresh") != old_refresh
    assert logged_in.get("/ui/cohorts").status_code == 200
    logged_in.cookies.set("jip_session", "garbage", domain=domain)
    assert logged_in.get("/ui/cohorts", follow_redirects=False).headers["location"] == "/ui/login"


def test_a_site_admin_in_no_project_saves_a_cohort_from_explore(
    site: Runtime, client: TestClient
) -> None:
    # As after the first `jip up`: a site admin who is a member of no project.
    add_user(site, "ada", admin=True)
    site.identity.projects.create("lung")
    browser_login(client, "ada")
    for page in ("/ui/explore", "/ui/cohorts"):  # save as cohort; import a cohort
        choice = re.search(r'<select name="project">(.*?)</select>', client.get(page).text, re.S)
        assert choice is not None, page
        assert re.findall(r"<option>(.*?)</option>", choice[1]) == [PROJECT, "lung"], page
    explore = client.get("/ui/explore", params={"Modality": "CT"}).text
    query = re.search(r'name="query" value="([^"]*)"', explore)
    found = re.search(r'id="total">(\d+) series', explore)
    assert query is not None and found is not None and int(found[1]) > 0
    saved = client.post(
        "/ui/cohorts",
        data={
            "name": "ct",
            "query": html.unescape(query[1]),
            "project": PROJECT,
            "csrf_token": csrf_of(explore),
        },
        follow_redirects=False,
    )
    assert saved.status_code == 303, saved.text
    cohort = client.get(saved.headers["location"]).text
    assert f'ct <span class="total">{found[1]} series</span>' in cohort
    assert f"Project <b>{PROJECT}</b> · created by ada" in cohort


def test_the_cohort_api_lets_a_site_admin_save_into_any_existing_project(
    site: Runtime, client: TestClient
) -> None:
    add_user(site, "ada", admin=True)
    headers = auth_for(client, "ada")
    # The site's only project needs no naming, as for a member of one project.
    saved = client.post("/api/meta/cohorts", json={"name": "all"}, headers=headers)
    assert saved.status_code == 201, saved.text
    assert saved.json()["project"] == PROJECT
    site.identity.projects.create("lung")
    unnamed = client.post("/api/meta/cohorts", json={"name": "which"}, headers=headers)
    assert unnamed.status_code == 400 and f"one of {PROJECT}, lung" in unnamed.text
    into_lung = client.post(
        "/api/meta/cohorts", json={"name": "all", "project": "lung"}, headers=headers
    )
    assert into_lung.status_code == 201 and into_lung.json()["project"] == "lung"
    missing = client.post(
        "/api/meta/cohorts", json={"name": "x", "project": "nowhere"}, headers=headers
    )
    assert missing.status_code == 404
