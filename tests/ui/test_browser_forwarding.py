"""The site admin's forwarding page in a real browser: a rule made with the form, a dead
letter with its error, and Retry; screenshots in test-artifacts/screenshots."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.base.support import add_user
from tests.ui.conftest import Site

from jip.config import DicomPeer
from jip.flow.forwarding import enqueue, get_rule, items, mark_failed
from jip.flow.forwarding_schema import ForwardRule, ItemState
from jip.store import Catalog
from jip.store.dimse.peers import put_peer


def test_admin_makes_a_forwarding_rule_and_retries_a_dead_letter(
    site: Site, browser: Any, screenshots: Path
) -> None:
    from playwright.sync_api import expect

    db = site.runtime.engine
    add_user(site.runtime, "fwd-admin", admin=True)
    put_peer(db, "pacs", DicomPeer(ae_title="PACS", host="127.0.0.1", port=104), user="test")
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.goto(f"{site.origin}/ui/admin/forwarding")
    page.fill("input[name=username]", "fwd-admin")
    page.fill("input[name=password]", site.password)
    page.click("button[type=submit]")
    page.goto(f"{site.origin}/ui/admin/forwarding")
    expect(page.locator("table.dead-letters")).to_contain_text("No dead letters.")

    page.fill("form.save input[name=name]", "ct-to-pacs")
    page.select_option("form.save select[name=peer]", "pacs")
    page.fill("form.save textarea[name=query]", '{"term": {"Modality": "CT"}}')
    page.click("form.save button[type=submit]")
    expect(page.locator(".flash")).to_have_text("forwarding rule ct-to-pacs created")
    expect(page.locator("table.forward-rules")).to_contain_text("ct-to-pacs")

    # The peer was down for every attempt: the forwarder left a dead letter.
    week = datetime.now(UTC) - timedelta(days=7)
    series_uid = Catalog(db).series_updated_between(week, datetime.now(UTC))[0]
    rule = get_rule(db, 1)
    enqueue(db, ForwardRule(id=rule.id, peer=rule.peer), [series_uid])
    [item] = items(db)
    error = "cannot reach PACS@127.0.0.1:104: Connection refused; check the peer's host and port"
    mark_failed(db, item, error, max_attempts=1, backoff=timedelta(0))
    page.reload()
    dead = page.locator("table.dead-letters")
    expect(dead).to_contain_text(series_uid)
    expect(dead).to_contain_text("Connection refused")
    page.screenshot(path=str(screenshots / "admin-forwarding.png"), full_page=True)

    dead.locator("button", has_text="Retry").click()
    expect(page.locator(".flash")).to_have_text("series queued again")
    expect(page.locator("table.dead-letters")).to_contain_text("No dead letters.")
    expect(page.locator("table.forward-queue")).to_contain_text("pending")
    assert [i.series_instance_uid for i in items(db, ItemState.PENDING)] == [series_uid]
    page.screenshot(path=str(screenshots / "admin-forwarding-retried.png"), full_page=True)
    context.close()
