"""Explore's and a cohort's charts, and a failed run retried, in Chromium (auth on).

Screenshots: ``explore-charts.png``, ``cohort-charts.png``, ``run-retry.png`` (the failed
run with its retry button and viewer links) and ``run-retried.png`` (the new run).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
from tests.base.support import auth_for
from tests.ui.conftest import Site

from jip.flow import records
from jip.flow.engine import RunState, TaskState
from jip.flow.schema import ResultKind

CHARTS_LOADED = """() => {
  const images = Array.from(document.querySelectorAll('img.chart'));
  return images.length === 4 && images.every(i => i.complete && i.naturalWidth > 0);
}"""


def _log_in(page: Any, site: Site) -> None:
    page.goto(f"{site.origin}/ui/explore")
    page.fill("input[name=username]", site.username)
    page.fill("input[name=password]", site.password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{site.origin}/ui/explore")


def test_explore_and_cohort_pages_draw_their_distributions(
    site: Site, browser: Any, screenshots: Path
) -> None:
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    _log_in(page, site)
    page.wait_for_function(CHARTS_LOADED)
    charts = page.locator("#charts img.chart")
    expect(charts).to_have_count(4)
    assert "Age at study (years) of the series found" in (charts.first.get_attribute("alt") or "")
    page.screenshot(path=str(screenshots / "explore-charts.png"), full_page=True)
    svg = page.request.get(f"{site.origin}/ui/charts/modalities.svg").text()
    assert ">Modalities</title>" in svg and "<title>MR: 4 series</title>" in svg

    page.check("fieldset[data-facet=Modality] input[value=CT]")
    expect(page).to_have_url(re.compile(r"Modality=CT"))
    page.wait_for_function(CHARTS_LOADED)
    expect(page.locator("img[data-chart=modalities]")).to_have_attribute(
        "src", re.compile(r"modalities\.svg\?Modality=CT")
    )
    page.fill("form.save input[name=name]", "CT charts")
    page.click("form.save button[type=submit]")
    expect(page.locator("h1")).to_contain_text("CT charts")
    page.wait_for_function(CHARTS_LOADED)
    page.screenshot(path=str(screenshots / "cohort-charts.png"), full_page=True)
    assert not [e for e in errors if "Content Security Policy" in e], errors
    context.close()


def test_a_failed_run_is_retried_from_its_page_and_results_open_in_the_viewer(
    site: Site, browser: Any, screenshots: Path
) -> None:
    from playwright.sync_api import expect

    viewer_link = "/viewer?StudyInstanceUIDs={study}&SeriesInstanceUIDs={series}"
    site.runtime.settings.ui.viewer_url_template = viewer_link
    with httpx.Client(base_url=site.origin) as api:
        headers = auth_for(api, site.username)  # type: ignore[arg-type]
        fields = ["SeriesInstanceUID", "StudyInstanceUID"]
        found = api.post("/api/meta/search", json={"limit": 2, "fields": fields}, headers=headers)
        (ok, ok_study), (bad, _) = [
            (h["SeriesInstanceUID"], h["StudyInstanceUID"]) for h in found.json()["hits"]
        ]
        started = api.post(
            "/api/flow/workflows/annotate-review/runs", json={"series": [ok, bad]}, headers=headers
        )
        assert started.status_code == 201, started.text
    run_id = started.json()["run_id"]
    site.engine.add_task(run_id, "series.fake-op", TaskState.SUCCESS, 0, ok)
    site.engine.add_task(run_id, "series.fake-op", TaskState.FAILED, 1, bad, log="fake-op failed")
    site.engine.set_run(run_id, RunState.FAILED)
    records.add_results(site.runtime.engine, [records.ResultRecord(
        id=None, run_id=run_id, series_instance_uid=ok, operator="fake-op", kind=ResultKind.DICOM,
        key="1.2.826.0.1.99", name="1.2.826.0.1.99", size_bytes=10, result_series_uid="1.2.826.0.1.99",
        study_instance_uid=ok_study, modality="SEG")])  # fmt: skip

    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    _log_in(page, site)
    page.goto(f"{site.origin}/ui/runs/{run_id}")
    expect(page.locator("#run-state")).to_have_text("failed")
    viewer = page.locator("a.open-viewer")
    expect(viewer).to_have_count(1)
    href = viewer.get_attribute("href") or ""
    assert ok_study in href and "1.2.826.0.1.99" in href  # through the viewer_url global
    retry = page.locator("#retry-form button")
    expect(retry).to_have_text("Retry 1 failed series")
    page.screenshot(path=str(screenshots / "run-retry.png"), full_page=True)
    retry.click()
    expect(page).not_to_have_url(re.compile(rf"/ui/runs/{run_id}$"))
    expect(page.locator("#retry-of")).to_contain_text(run_id)
    new_id = page.url.rsplit("/", 1)[-1]
    assert site.engine.runs[new_id].conf["series"] == [bad]
    page.screenshot(path=str(screenshots / "run-retried.png"), full_page=True)
    context.close()
