"""The researcher's path in a real browser: log in, explore, filter, save a cohort, log out."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.ui.conftest import Site

from jip.flow.engine import TaskState


def test_researcher_explores_saves_a_cohort_and_logs_out(
    site: Site, browser: Any, screenshots: Path
) -> None:
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)

    page.goto(f"{site.origin}/")
    expect(page).to_have_url(re.compile(r"/auth/authorize\?"))
    page.fill("input[name=username]", site.username)
    page.fill("input[name=password]", site.password)
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{site.origin}/ui/explore")

    expect(page.locator("#total")).to_have_text("12 series")
    modality = page.locator("fieldset[data-facet=Modality] label")
    expect(modality.first).to_be_visible()
    counts = {
        label.locator(".key").inner_text(): int(label.locator(".count").inner_text())
        for label in modality.all()
    }
    assert sum(counts.values()) == 12
    thumbs = page.locator("img.thumb")
    expect(thumbs.first).to_be_visible()
    page.wait_for_function(
        "() => Array.from(document.querySelectorAll('img.thumb'))"
        ".every(i => i.complete && i.naturalWidth > 0)"
    )
    page.screenshot(path=str(screenshots / "explore.png"), full_page=True)

    chosen, expected = "CT", counts["CT"]
    page.check(f"fieldset[data-facet=Modality] input[value={chosen}]")
    expect(page).to_have_url(re.compile(rf"Modality={chosen}"))
    expect(page.locator("#total")).to_have_text(f"{expected} series")

    page.fill("form.save input[name=name]", "CT series")
    page.click("form.save button[type=submit]")
    expect(page.locator("h1")).to_contain_text("CT series")
    expect(page.locator("h1 .total")).to_have_text(f"{expected} series")
    page.screenshot(path=str(screenshots / "cohort.png"), full_page=True)

    page.click("nav a[href='/ui/cohorts']")
    expect(page.locator("table.list")).to_contain_text("CT series")
    page.screenshot(path=str(screenshots / "cohorts.png"), full_page=True)

    page.click("table.list >> text=CT series")
    page.click("text=Run a workflow")
    page.click("text=annotate-review")
    page.screenshot(path=str(screenshots / "workflow.png"), full_page=True)
    page.click("form.start button[type=submit]")
    expect(page).to_have_url(re.compile(r"/ui/runs/"))
    run_id = page.url.rsplit("/", 1)[-1]
    site.engine.add_task(run_id, "series.annotate", TaskState.WAITING, 0, "0", log="waiting")
    page.reload()
    expect(page.locator("#run-state")).to_have_text("queued")
    page.screenshot(path=str(screenshots / "run.png"), full_page=True)
    page.click("text=Mark annotate done")
    expect(page).to_have_url(re.compile(r"/ui/runs/"))
    page.click("text=Cancel run")
    expect(page.locator("#run-state")).to_have_text("cancelled")
    page.goto(f"{site.origin}/ui/cohorts")
    page.click("table.list >> text=CT series")
    page.locator("table.series td a").nth(1).click()
    expect(page.locator("img.frame")).to_be_visible()
    page.wait_for_function("() => document.querySelector('img.frame').naturalWidth > 0")
    page.screenshot(path=str(screenshots / "series.png"), full_page=True)

    page.goto(f"{site.origin}/ui/admin")
    expect(page.locator("h1")).to_have_text("Administration")
    page.screenshot(path=str(screenshots / "admin.png"), full_page=True)

    page.click("header form.logout button")
    expect(page.locator("body")).to_contain_text("signed out")
    page.goto(f"{site.origin}/ui/explore")
    expect(page).to_have_url(re.compile(r"/auth/authorize\?"))
    assert not [e for e in errors if "Content Security Policy" in e], errors
    context.close()


def test_admin_sees_the_site_status_and_adds_a_peer(
    site: Site, browser: Any, screenshots: Path
) -> None:
    from playwright.sync_api import expect
    from tests.base.support import add_user

    add_user(site.runtime, "ada", admin=True)
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.goto(f"{site.origin}/ui/admin")
    page.fill("input[name=username]", "ada")
    page.fill("input[name=password]", site.password)
    page.click("button[type=submit]")
    page.goto(f"{site.origin}/ui/admin")
    expect(page.locator("table.status")).to_contain_text("12 series, 36 instances")
    page.screenshot(path=str(screenshots / "admin.png"), full_page=True)

    page.click("nav[aria-label=Administration] >> text=DICOM peers")
    page.fill("form.save input[name=name]", "pacs")
    page.fill("form.save input[name=ae_title]", "PACS")
    page.fill("form.save input[name=host]", "127.0.0.1")
    page.click("form.save button[type=submit]")
    expect(page.locator(".flash")).to_have_text("peer pacs saved")
    expect(page.locator("table.peers")).to_contain_text("PACS")
    page.screenshot(path=str(screenshots / "admin-peers.png"), full_page=True)
    context.close()
