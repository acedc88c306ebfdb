"""Upload a zip of a few hundred instances in Chromium, find them in Explore, save them as
a cohort and download it: the zip's members are the uploaded files, byte for byte.

Twice: against the UI tests' own site (uvicorn in this process, indexed on demand), and
against the session's real `jip up` (tests/up_site.py, its indexer in the background),
which runs last (``up_site_last``): its new series would change what the others count.
Its series are MR of the knee: no sample or phantom the other tests count is one.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.ui.conftest import Site
from tests.up_site import LAST, UpSite

from jip.meta.indexer import Indexer
from jip.samples import image_series, random_patient, write_datasets

SERIES, SLICES = 3, 100
EXPLORE = "/ui/explore?Modality=MR&BodyPartExamined=KNEE"


def _zip_of_instances(folder: Path, seed: int) -> tuple[Path, dict[str, bytes]]:
    """SERIES x SLICES small MR instances (and one text file) in one zip; its DICOM
    members by name."""
    import random

    rng = random.Random(seed)
    datasets = [
        ds
        for number in range(SERIES)
        for ds in image_series(
            patient=random_patient(rng, seed + number), modality="MR", body_part="KNEE",
            slices=SLICES, rows=16, columns=16, series_number=number + 1,
        )
    ]  # fmt: skip
    paths = write_datasets(datasets, folder / "export")
    target = folder / "knee-mr.zip"
    members: dict[str, bytes] = {}
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in paths:
            name = path.relative_to(folder).as_posix()
            members[name] = path.read_bytes()
            archive.write(path, name)
        archive.writestr("export/notes.txt", "exported from the scanner console")
    return target, members


def _logged_in(browser: Any, origin: str, username: str, password: str) -> tuple[Any, list[str]]:
    """A page of a new browser context, logged in; the script and CSP errors it logs."""
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(f"script error: {exc}"))
    page.goto(f"{origin}/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{origin}/ui/explore")
    return page, errors


def _script_errors(errors: list[str]) -> list[str]:
    return [e for e in errors if "Content Security Policy" in e or "script" in e]


def _upload_find_download(
    page: Any, origin: str, folder: Path, screenshots: Path, prefix: str, index: Callable[[], None]
) -> None:
    """The whole path; ``index`` makes the site index what arrived (or waits for it)."""
    from playwright.sync_api import expect

    upload, members = _zip_of_instances(folder, seed=500 + len(prefix))
    page.click("nav a[href='/ui/upload']")
    page.select_option("[data-upload-project]", "default")
    page.set_input_files("[data-pick-files]", str(upload))
    expect(page.locator("[data-upload-files] tbody tr")).to_have_count(1)
    page.screenshot(path=str(screenshots / f"{prefix}upload-chosen.png"), full_page=True)
    page.click("[data-upload-start]")
    expect(page.locator("[data-upload-done]")).to_be_visible(timeout=120_000)
    expect(page.locator("[data-upload-summary]")).to_contain_text(f"{SERIES * SLICES} stored")
    expect(page.locator("[data-upload-summary]")).to_contain_text("1 refused")
    refused = page.locator("tr[data-file='knee-mr.zip/export/notes.txt']")
    expect(refused).to_contain_text("refused")
    page.screenshot(path=str(screenshots / f"{prefix}upload-done.png"), full_page=True)

    index()
    for _ in range(60):  # the indexer of `jip up` takes a moment
        page.goto(f"{origin}{EXPLORE}")
        if page.locator("#total").inner_text() == f"{SERIES} series":
            break
        page.wait_for_timeout(1000)
    expect(page.locator("#total")).to_have_text(f"{SERIES} series")
    page.screenshot(path=str(screenshots / f"{prefix}upload-explore.png"), full_page=True)

    page.fill("form.save input[name=name]", f"{prefix}uploaded knee MR")
    if page.locator("form.save select[name=project]").count():
        page.select_option("form.save select[name=project]", "default")
    page.click("form.save button[type=submit]")
    expect(page.locator("h1 .total")).to_have_text(f"{SERIES} series")
    page.screenshot(path=str(screenshots / f"{prefix}cohort-download.png"), full_page=True)
    with page.expect_download() as waiting:
        page.click("a:has-text('Download DICOM')")
    saved = folder / "cohort.zip"
    waiting.value.save_as(saved)
    with zipfile.ZipFile(saved) as archive:
        got = sorted(archive.read(n) for n in archive.namelist() if n.endswith(".dcm"))
        assert re.search(r"\.zip$", waiting.value.suggested_filename)
    assert got == sorted(members.values())  # byte-identical to what was uploaded


def test_upload_a_zip_then_download_the_cohort(
    site: Site, browser: Any, screenshots: Path, tmp_path: Path
) -> None:
    page, errors = _logged_in(browser, site.origin, site.username, site.password)
    runtime = site.runtime

    def index() -> None:
        Indexer(catalog=runtime.catalog, storage=runtime.storage, index=runtime.index).drain()

    # A form posted from elsewhere carries the session cookie but not the page's token.
    forged = page.request.post(
        f"{site.origin}/ui/upload?project=default",
        multipart={"files": {"name": "a.dcm", "mimeType": "application/dicom", "buffer": b"x"}},
    )
    assert forged.status == 403 and "CSRF" in forged.text()
    _upload_find_download(page, site.origin, tmp_path, screenshots, "", index)
    assert _script_errors(errors) == []
    page.context.close()


@pytest.mark.slow
@pytest.mark.timeout(900)
@getattr(pytest.mark, LAST)
def test_upload_a_zip_then_download_the_cohort_on_jip_up(
    up_site: UpSite, browser: Any, screenshots: Path, tmp_path: Path
) -> None:
    page, errors = _logged_in(browser, up_site.origin, up_site.username, up_site.password)
    _upload_find_download(page, up_site.origin, tmp_path, screenshots, "up-", lambda: None)
    assert _script_errors(errors) == []
    page.context.close()
