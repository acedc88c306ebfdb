"""OHIF at /viewer in Debian's Chromium, against a real `jip up` (auth on, Airflow off):
a researcher logs in once and the viewer draws the study; a user of another project gets
no images; the study's SEG shows in OHIF's segmentation panel.

The viewer's files come from `make install` (python -m jip.ui.ohif_fetch).
"""

from __future__ import annotations

import io
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from jip_sdk.phantom import build_abdomen_phantom, write_ct_series, write_truth_seg
from tests.up_site import UpSite, start_up_site, wait_for

from jip.config import Settings
from jip.ui.ohif_fetch import VERSION, is_installed

PASSWORD = "viewer-test-password-1"
RESEARCHER, OUTSIDER = "rita", "otto"
# Cornerstone draws into canvas.cornerstone-canvas; a screenshot of it shows what the
# user sees, whether WebGL or the CPU fallback rendered it.
CANVAS = "canvas.cornerstone-canvas"


@dataclass
class ViewerSite:
    up: UpSite
    study: str
    ct_series: str


def _storescu(site: UpSite, files: list[Path]) -> None:
    sent = subprocess.run(
        ["storescu", "-R", "-aec", "JIP", "127.0.0.1", str(site.dicom_port), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert sent.returncode == 0, f"storescu failed:\n{sent.stdout}{sent.stderr}"


def _add_user(api: httpx.Client, username: str, project: str) -> None:
    created = api.post("/api/users", json={"username": username, "password": PASSWORD})
    assert created.status_code == 201, created.text
    member = api.put(f"/api/projects/{project}/members/{username}", json={"role": "researcher"})
    assert member.status_code < 300, member.text


@pytest.fixture(scope="module")
def viewer_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ViewerSite]:
    if not is_installed(Settings().ui.ohif.dir):
        pytest.fail(f"OHIF {VERSION} is not installed: run `make install`")
    root = tmp_path_factory.mktemp("viewer-site")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("JIP_FLOW__AIRFLOW_ENABLED", "false")  # the viewer needs no workflows
        running = start_up_site(root)
        up = next(running)
    try:
        phantom = build_abdomen_phantom(shape=(12, 96, 96), spacing_mm=(4.0, 4.0, 10.0))
        ct = write_ct_series(phantom, root / "ct")
        seg = write_truth_seg(phantom, ct.series, root / "seg", organs=("liver", "spleen"))
        _storescu(up, [*sorted(ct.series.path.glob("*.dcm")), seg])
        study = ct.study_instance_uid

        def stored() -> list[Any] | None:
            found = up.api.get(f"/dicom-web/studies/{study}/series")
            return found.json() if found.status_code == 200 and len(found.json()) == 2 else None

        wait_for("the CT and its SEG in the catalog", stored, up.log, 60)
        _add_user(up.api, RESEARCHER, Settings().store.default_project)
        made = up.api.post("/api/projects", json={"name": "elsewhere"})
        assert made.status_code == 201, made.text
        _add_user(up.api, OUTSIDER, "elsewhere")
        yield ViewerSite(up, study, ct.series_instance_uid)
    finally:
        running.close()


def _login(page: Any, site: ViewerSite, username: str) -> None:
    page.goto(f"{site.up.origin}/viewer?StudyInstanceUIDs={site.study}")
    page.wait_for_url("**/auth/authorize?**")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/ui/explore")


def _variance(png: bytes) -> float:
    from PIL import Image, ImageStat

    image = Image.open(io.BytesIO(png)).convert("L")
    return float(ImageStat.Stat(image).var[0])


def _reddish(png: bytes) -> int:
    """Pixels clearly redder than blue: the liver's segment colour over the CT, never a
    grey CT value nor OHIF's blue frame and background."""
    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)
    return int(np.count_nonzero(rgb[..., 0] - rgb[..., 2] > 30))


def _drawn(page: Any) -> float:
    """The pixel variance of the first viewport's canvas (0 for a blank one)."""
    return _variance(page.locator(CANVAS).first.screenshot())


def test_researcher_opens_a_study_in_ohif_without_a_second_login(
    viewer_site: ViewerSite, browser: Any, screenshots: Path
) -> None:
    context = browser.new_context(viewport={"width": 1500, "height": 950})
    page = context.new_page()
    failed: list[str] = []
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
    _login(page, viewer_site, RESEARCHER)

    page.goto(f"{viewer_site.up.origin}/ui/series/{viewer_site.study}/{viewer_site.ct_series}")
    with context.expect_page() as opened:
        page.click("#open-viewer")
    viewer = opened.value
    viewer.on(
        "response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None
    )
    viewer.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
    viewer.wait_for_url("**/viewer/viewer?StudyInstanceUIDs=*")
    viewer.locator(CANVAS).first.wait_for(state="visible", timeout=120_000)
    wait_for("a non-blank image in OHIF", lambda: True if _drawn(viewer) > 25 else None, None, 120)
    viewer.screenshot(path=str(screenshots / "ohif-study.png"))
    assert "/auth/" not in viewer.url
    assert not [f for f in failed if "/viewer/dicom-web" in f], failed
    assert not [c for c in console if "Content Security Policy" in c], console
    context.close()


def test_ohif_shows_the_seg_in_its_segmentation_panel(
    viewer_site: ViewerSite, browser: Any, screenshots: Path
) -> None:
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1500, "height": 950})
    page = context.new_page()
    _login(page, viewer_site, RESEARCHER)
    page.goto(f"{viewer_site.up.origin}/viewer?StudyInstanceUIDs={viewer_site.study}")
    page.locator(CANVAS).first.wait_for(state="visible", timeout=120_000)
    wait_for("the CT in OHIF", lambda: True if _drawn(page) > 25 else None, None, 120)
    grey = _reddish(page.locator(CANVAS).first.screenshot())  # the CT alone
    page.get_by_text("Phantom ground truth").first.dblclick()  # the SEG in the study browser
    page.get_by_text("LOAD", exact=True).first.click()  # onto the CT it segments
    page.locator("[data-cy=panelSegmentation-btn]").click()
    segments = page.locator("[data-cy=data-row-title]")  # the segmentation panel's rows
    expect(segments.filter(has_text="Liver")).to_be_visible(timeout=120_000)
    expect(segments.filter(has_text="Spleen")).to_be_visible()

    def overlaid() -> bool | None:
        return True if _reddish(page.locator(CANVAS).first.screenshot()) > grey + 5000 else None

    wait_for("the liver's colour over the CT", overlaid, None, 60)
    page.screenshot(path=str(screenshots / "ohif-seg.png"))
    context.close()


def test_a_user_of_another_project_gets_no_images(
    viewer_site: ViewerSite, browser: Any, screenshots: Path
) -> None:
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1500, "height": 950})
    page = context.new_page()
    answers: list[tuple[int, str]] = []
    page.on(
        "response", lambda r: answers.append((r.status, r.url)) if "/dicom-web/" in r.url else None
    )
    _login(page, viewer_site, OUTSIDER)
    page.goto(f"{viewer_site.up.origin}/viewer/viewer?StudyInstanceUIDs={viewer_site.study}")
    expect(page.get_by_text("not available")).to_be_visible(timeout=120_000)
    page.screenshot(path=str(screenshots / "ohif-refused.png"))
    assert "/auth/" not in page.url  # logged in, and refused the data all the same
    assert answers, "OHIF asked the mount for nothing"
    read = [
        url
        for status, url in answers
        if status == 200 and ("/metadata" in url or "/frames/" in url)
    ]
    assert not read, read
    assert page.locator(CANVAS).count() == 0
    # What OHIF asked first, asked by hand: the study is not among this user's.
    study = page.evaluate(
        "async (u) => { const r = await fetch(u); return [r.status, await r.text()]; }",
        f"/viewer/dicom-web/studies?StudyInstanceUID={viewer_site.study}",
    )
    assert study[0] in (200, 204) and viewer_site.study not in study[1], study
    series = page.evaluate(
        "async (u) => (await fetch(u)).status",
        f"/viewer/dicom-web/studies/{viewer_site.study}/series/{viewer_site.ct_series}/metadata",
    )
    assert series == 404
    context.close()
