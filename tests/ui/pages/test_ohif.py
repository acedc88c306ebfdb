"""The OHIF viewer at /viewer, in-process: its page behind the UI session, its files, its
configuration, and the read-only DICOMweb mount that carries the session's login.

A small stand-in for the fetched ``dist/`` is enough here; the real viewer runs in
Chromium in tests/ui/test_viewer_ohif.py.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest
from tests.base.support import Site
from tests.ui.pages.support import browser_login

from jip.ui import ohif_fetch

INLINE = 'window.PUBLIC_URL="/viewer/"'
BUNDLE = "app.bundle.0f6159c501addfe9.js"


@pytest.fixture
def viewer(site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fetched-looking viewer in a folder of its own, set as ``ui.ohif.dir``."""
    root = tmp_path / "ohif"
    dist = ohif_fetch.dist_dir(root)
    dist.mkdir(parents=True)
    (dist / "index.html").write_text(
        f'<!doctype html><html><head><script>{INLINE}</script><script defer src="/viewer/{BUNDLE}">'
        '</script></head><body><div id="root"></div></body></html>'
    )
    (dist / BUNDLE).write_text("console.log('ohif');")
    (dist / "1602.css").write_text("body{}")
    (dist / ohif_fetch.MARKER).write_text(ohif_fetch.INTEGRITY + "\n")
    monkeypatch.setattr(site.runtime.settings.ui.ohif, "dir", root)
    return dist


def test_a_logged_out_visitor_of_the_viewer_is_sent_to_the_login(site: Site, viewer: Path) -> None:
    page = site.client.get("/viewer/viewer?StudyInstanceUIDs=1.2.3", follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"] == "/ui/login"


def test_a_deep_link_reaches_the_viewer_page_with_its_inline_script_allowed(
    site: Site, viewer: Path
) -> None:
    client = site.client
    browser_login(client, "alice")
    entry = client.get("/viewer?StudyInstanceUIDs=1.2.3", follow_redirects=False)
    assert entry.headers["location"] == "/viewer/viewer?StudyInstanceUIDs=1.2.3"
    page = client.get(entry.headers["location"])
    assert page.status_code == 200
    assert f'src="/viewer/{BUNDLE}"' in page.text
    digest = base64.b64encode(hashlib.sha256(INLINE.encode()).digest()).decode()
    csp = page.headers["content-security-policy"]
    assert f"'sha256-{digest}'" in csp and "'unsafe-inline'" not in csp.split("style-src")[0]
    assert page.headers["cache-control"] == "no-store"
    assert client.get("/viewer/").status_code == 200  # OHIF's study list


def test_viewer_files_are_public_and_hashed_ones_cached_for_long(site: Site, viewer: Path) -> None:
    bundle = site.client.get(f"/viewer/{BUNDLE}")
    assert bundle.status_code == 200 and bundle.text == "console.log('ohif');"
    assert "immutable" in bundle.headers["cache-control"]
    sheet = site.client.get("/viewer/1602.css")
    assert sheet.headers["cache-control"] == "public, max-age=86400"
    for hidden in (f"/viewer/{ohif_fetch.MARKER}", "/viewer/..%2F..%2Fkeys%2Fsigning.pem"):
        assert site.client.get(hidden).status_code == 404, hidden


def test_app_config_points_ohif_at_the_read_only_mount(site: Site, viewer: Path) -> None:
    config = site.client.get("/viewer/app-config.js")
    assert config.headers["content-type"].startswith("text/javascript")
    body = config.text
    assert '"routerBasename": "/viewer"' in body
    assert 'window.location.origin + "/viewer/dicom-web"' in body
    assert '"dicomUploadEnabled": false' in body
    assert "token" not in body.lower().replace("access tokens are", "")


def test_the_mount_serves_only_the_session_users_projects(site: Site) -> None:
    client = site.client
    browser_login(client, "alice")  # liver only
    found = client.get("/viewer/dicom-web/series", headers={"Accept": "application/dicom+json"})
    assert found.status_code == 200, found.text
    uids = {s["0020000E"]["Value"][0] for s in found.json()}
    assert uids == {site.series["liver"].series}
    liver, lung = site.series["liver"], site.series["lung"]
    metadata = client.get(f"/viewer/dicom-web/studies/{liver.study}/series/{liver.series}/metadata")
    assert metadata.status_code == 200
    pixels = metadata.json()[0]["7FE00010"]["BulkDataURI"]
    assert pixels.startswith("http://testserver/viewer/dicom-web/studies/"), pixels
    assert client.get(pixels).status_code == 200  # the URLs it returns lead back to it
    refused = client.get(f"/viewer/dicom-web/studies/{lung.study}/series/{lung.series}/metadata")
    assert refused.status_code == 404
    frame = f"/viewer/dicom-web/studies/{lung.study}/series/{lung.series}/instances/{lung.sops[0]}/frames/1"
    assert client.get(frame).status_code == 404


def test_the_mount_refuses_writes_strangers_and_other_sites(site: Site) -> None:
    client = site.client
    assert client.get("/viewer/dicom-web/studies").status_code == 401
    bearer = client.get("/viewer/dicom-web/studies", headers=site.tokens["root"])
    assert bearer.status_code == 401  # the mount takes the session cookie only
    browser_login(client, "olga")
    stow = client.post(
        "/viewer/dicom-web/studies",
        content=b"--x--",
        headers={"Content-Type": "multipart/related; type=application/dicom; boundary=x"},
    )
    assert stow.status_code == 405 and "read-only" in stow.json()["detail"]
    liver = site.series["liver"]
    delete = client.delete(f"/viewer/dicom-web/studies/{liver.study}")
    assert delete.status_code == 405
    assert site.runtime.catalog.instances_of_study(liver.study)  # nothing deleted
    for origin in ("cross-site", "same-site"):
        other = client.get("/viewer/dicom-web/studies", headers={"Sec-Fetch-Site": origin})
        assert other.status_code == 403, origin
    assert (
        client.get(
            "/viewer/dicom-web/studies", headers={"Sec-Fetch-Site": "same-origin"}
        ).status_code
        == 200
    )


def test_series_lists_link_to_the_viewer_when_it_is_installed(site: Site, viewer: Path) -> None:
    site.index()
    client = site.client
    browser_login(client, "alice")
    liver = site.series["liver"]
    page = client.get(f"/ui/series/{liver.study}/{liver.series}")
    link = f'href="/viewer/viewer?StudyInstanceUIDs={liver.study}&amp;initialSeriesInstanceUID={liver.series}"'
    assert f'id="open-viewer" {link}' in page.text
    explore = client.get("/ui/explore")
    assert f'class="open-viewer" {link}' in explore.text


def test_without_the_viewer_files_there_is_no_link_and_the_page_says_how_to_install(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(site.runtime.settings.ui.ohif, "dir", tmp_path / "none")
    site.index()
    client = site.client
    browser_login(client, "alice")
    liver = site.series["liver"]
    assert "open-viewer" not in client.get(f"/ui/series/{liver.study}/{liver.series}").text
    page = client.get("/viewer/viewer?StudyInstanceUIDs=1")
    assert page.status_code == 503 and "make install" in page.text
    monkeypatch.setattr(site.runtime.settings.ui.ohif, "enabled", False)
    assert client.get("/viewer/viewer").status_code == 404


def test_a_sites_own_viewer_template_wins_over_ohif(
    site: Site, viewer: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(site.runtime.settings.ui, "viewer_url_template", "/pacs/view?s={study}")
    site.index()
    client = site.client
    browser_login(client, "alice")
    liver = site.series["liver"]
    page = client.get(f"/ui/series/{liver.study}/{liver.series}").text
    assert f'id="open-viewer" href="/pacs/view?s={liver.study}"' in page


def test_the_viewer_keeps_its_session_alive_and_says_when_it_has_ended(site: Site) -> None:
    client = site.client
    assert client.get("/viewer/session").status_code == 401
    browser_login(client, "alice")
    assert client.get("/viewer/session").status_code == 204
