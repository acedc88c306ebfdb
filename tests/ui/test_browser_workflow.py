"""The researcher's whole path in Chromium against a real `jip up` with Airflow: log in,
filter by facets, save a cohort, run organ-seg-radiomics on it, watch it finish, look at
the SEG overlay on the CT, download the radiomics CSV, log out.

It shares the session's `jip up` (tests/up_site.py) with tests/test_up_workflow.py and
runs after it (``up_site_last``): its cohort and run would change what those count.
"""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from tests.up_site import ABDOMEN_CT, LAST, AbdomenCt, UpSite, wait_for

pytestmark = [
    pytest.mark.slow,
    getattr(pytest.mark, LAST),
    pytest.mark.timeout(1200),  # `jip up` start when run alone, then a real workflow run
    pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk is not installed"),
]

COHORT = "abdomen-ct-browser"  # not the CLI test's "abdomen-ct"
RUN_TIMEOUT_MS = 420_000
OVERLAY_LOADED = """() => {
  const shown = document.querySelector('img.overlay:not([hidden])');
  return shown !== null && shown.complete && shown.naturalWidth > 0 && shown.src.includes('/ui/overlay/');
}"""


def _indexed(site: UpSite) -> int | None:
    found = site.api.post("/api/meta/search", json={"query": ABDOMEN_CT, "limit": 1})
    if found.status_code != 200:
        return None
    total = int(found.json()["total"])
    return total if total > 0 else None


def test_researcher_runs_organ_seg_radiomics_from_the_browser(
    up_site: UpSite, abdomen_ct: AbdomenCt, browser: Any, screenshots: Path
) -> None:
    from playwright.sync_api import expect

    ct = abdomen_ct.send()
    assert wait_for("the CT to be indexed", lambda: _indexed(up_site), up_site.log, 120) == 1
    # The first admin of `jip up` belongs to no project, yet may save into any (the
    # README's path, as a new user follows it: no step outside the browser).
    assert up_site.api.get("/api/me").json()["projects"] == {}

    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    console: list[str] = []
    page.on("console", lambda msg: console.append(msg.text) if msg.type == "error" else None)

    page.goto(f"{up_site.origin}/")
    expect(page).to_have_url(re.compile(r"/auth/authorize\?"))
    page.screenshot(path=str(screenshots / "login.png"), full_page=True)
    page.fill("input[name=username]", up_site.username)
    page.fill("input[name=password]", up_site.password)
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{up_site.origin}/ui/explore")
    page.screenshot(path=str(screenshots / "explore.png"), full_page=True)

    page.check("fieldset[data-facet=Modality] input[value=CT]")
    expect(page).to_have_url(re.compile(r"Modality=CT"))
    page.check("fieldset[data-facet=BodyPartExamined] input[value=ABDOMEN]")
    expect(page).to_have_url(re.compile(r"BodyPartExamined=ABDOMEN"))
    expect(page.locator("#total")).to_have_text("1 series")
    page.screenshot(path=str(screenshots / "explore-filtered.png"), full_page=True)

    page.fill("form.save input[name=name]", COHORT)
    page.select_option("form.save select[name=project]", "default")
    page.click("form.save button[type=submit]")
    expect(page.locator("h1")).to_contain_text(COHORT)
    expect(page.locator("h1 .total")).to_have_text("1 series")
    page.screenshot(path=str(screenshots / "cohort.png"), full_page=True)

    page.click("text=Run a workflow")
    page.screenshot(path=str(screenshots / "workflows.png"), full_page=True)
    page.click("table.list a:text-is('organ-seg-radiomics')")
    expect(page.locator("h1")).to_have_text("organ-seg-radiomics")
    selected = page.locator("select[name=cohort_id] option:checked")
    expect(selected).to_contain_text(COHORT)
    page.screenshot(path=str(screenshots / "workflow.png"), full_page=True)
    page.click("form.start button[type=submit]")
    expect(page).to_have_url(re.compile(r"/ui/runs/jip__"))

    # The page reloads itself every few seconds until the run has finished.
    state = page.locator("#run-state")
    expect(state).to_have_text(re.compile(r"^(success|failed|cancelled)$"), timeout=RUN_TIMEOUT_MS)
    page.screenshot(path=str(screenshots / "run.png"), full_page=True)
    assert state.inner_text() == "success", page.locator("pre.logs").inner_text()[-4000:]

    page.click("a.source-series")
    expect(page).to_have_url(re.compile(rf"/ui/series/.+/{re.escape(ct.series_instance_uid)}"))
    legend = page.locator("fieldset.legend").first
    expect(legend).to_contain_text("Liver")
    expect(legend).to_contain_text("Spleen")
    page.wait_for_function(OVERLAY_LOADED)
    slider = page.locator("[data-slider]")
    middle = (int(slider.get_attribute("max") or "1") + 1) // 2
    slider.fill(str(middle))
    expect(page.locator("img.overlay:not([hidden])")).to_have_attribute(
        "src", re.compile(rf"/{re.escape(_instance(page, middle))}$")
    )
    page.wait_for_function(OVERLAY_LOADED)
    page.screenshot(path=str(screenshots / "series-overlay.png"))

    legend.locator("label.segment", has_text="Spleen").locator("input").uncheck()
    expect(page.locator("img.overlay:not([hidden])")).to_have_attribute(
        "src", re.compile(r"\?segment=\d+(&segment=\d+)*$")
    )
    page.locator("[data-opacity]").fill("80")
    opacity = page.locator("img.overlay:not([hidden])").evaluate("o => o.style.opacity")
    assert opacity == "0.8"

    with page.expect_download() as pending:
        page.click("a.download")
    download = pending.value
    saved = screenshots / "radiomics.csv"
    download.save_as(saved)
    rows = list(csv.DictReader(saved.open(newline="")))
    assert {row["segment_label"] for row in rows} >= {"Liver", "Spleen"}
    assert {row["series_instance_uid"] for row in rows} == {ct.series_instance_uid}

    page.click("header form.logout button")
    expect(page.locator("body")).to_contain_text("signed out")
    page.screenshot(path=str(screenshots / "logged-out.png"), full_page=True)
    page.goto(f"{up_site.origin}/ui/cohorts")
    expect(page).to_have_url(re.compile(r"/auth/authorize\?"))
    assert not [e for e in console if "Content Security Policy" in e], console
    context.close()


def _instance(page: Any, position: int) -> str:
    uid = page.locator("[data-instance]").nth(position - 1).get_attribute("data-instance")
    assert uid
    return str(uid)
