"""The series viewer's SEG overlay in Chromium, on the in-process site (no Airflow): a
phantom CT with its truth SEG, scrolled, with a segment switched off and the opacity set."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from jip_sdk.phantom import build_abdomen_phantom, write_ct_series, write_truth_seg
from tests.ui.conftest import Site

from jip.meta.indexer import Indexer

OVERLAY_LOADED = """() => {
  const shown = document.querySelector('img.overlay:not([hidden])');
  return shown !== null && shown.complete && shown.naturalWidth > 0;
}"""


def test_series_page_draws_the_seg_over_the_images(
    site: Site, browser: Any, screenshots: Path, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    phantom = build_abdomen_phantom(shape=(10, 64, 64), spacing_mm=(6.0, 6.0, 15.0))
    ct = write_ct_series(phantom, tmp_path / "ct")
    seg = write_truth_seg(phantom, ct.series, tmp_path / "seg", organs=("liver", "spleen"))
    for path in [*sorted(ct.series.path.glob("*.dcm")), seg]:
        site.runtime.ingestor.ingest_file(path)
    runtime = site.runtime
    Indexer(catalog=runtime.catalog, storage=runtime.storage, index=runtime.index).run_once()

    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    console: list[str] = []
    page.on("console", lambda msg: console.append(msg.text) if msg.type == "error" else None)
    failed: list[str] = []
    page.on("response", lambda r: failed.append(r.url) if r.status >= 400 else None)
    page.goto(f"{site.origin}/ui/series/{ct.study_instance_uid}/{ct.series_instance_uid}")
    page.fill("input[name=username]", site.username)
    page.fill("input[name=password]", site.password)
    page.click("button[type=submit]")
    page.goto(f"{site.origin}/ui/series/{ct.study_instance_uid}/{ct.series_instance_uid}")

    legend = page.locator("fieldset.legend")
    expect(legend).to_contain_text("Liver")
    expect(legend).to_contain_text("Spleen")
    swatch = legend.locator(".swatch").first.evaluate("s => getComputedStyle(s).backgroundColor")
    assert swatch.startswith("rgb(") and swatch != "rgba(0, 0, 0, 0)"
    page.wait_for_function(OVERLAY_LOADED)

    overlay = page.locator("img.overlay:not([hidden])")
    page.locator("[data-slider]").fill("5")
    expect(overlay).to_have_attribute("src", re.compile(r"/[0-9.]+$"))
    page.wait_for_function(OVERLAY_LOADED)
    expect(page.locator("[data-index]")).to_have_text("5")
    page.locator("img.frame").hover()
    page.mouse.wheel(0, 120)
    expect(page.locator("[data-index]")).to_have_text("6")
    page.screenshot(path=str(screenshots / "series-overlay-fast.png"))

    legend.locator("label.segment", has_text="Spleen").locator("input").uncheck()
    expect(overlay).to_have_attribute("src", re.compile(r"\?segment=1$"))
    legend.locator("label.segment", has_text="Liver").locator("input").uncheck()
    expect(page.locator("img.overlay")).to_be_hidden()
    legend.locator("label.segment", has_text="Liver").locator("input").check()
    page.locator("[data-opacity]").fill("80")
    assert page.locator("img.overlay").evaluate("o => o.style.opacity") == "0.8"
    assert not [e for e in console if "Content Security Policy" in e], console
    assert not [url for url in failed if "/ui/" in url], failed
    context.close()
