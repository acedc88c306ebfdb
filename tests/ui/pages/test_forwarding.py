"""The forwarding admin page and the run page's "Send to…" form, in-process on the
auth-enabled site of ``tests/base`` (Orthanc 1.10 as the peer for the send)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from tests.base.support import Site, auth_for
from tests.fakes.workflow_engine import FakeEngine, series_workflow
from tests.store.conftest import Orthanc, running_orthanc
from tests.store.test_forward_send import series_in
from tests.ui.pages.support import browser_login, csrf_of, flash_of, post_form

from jip.flow import records
from jip.flow.engine import TaskState
from jip.flow.forwarding import ForwardRuleIn, add_rule, enqueue, items, mark_failed
from jip.flow.forwarding_schema import ForwardRule, ItemState
from jip.flow.schema import ResultKind

PAGE = "/ui/admin/forwarding"


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    (tmp_path / "orthanc").mkdir()
    with running_orthanc(tmp_path / "orthanc", {}) as running:
        yield running


def dead_letter(site: Site, series_uid: str) -> None:
    """A series of a rule that failed its only attempt."""
    db = site.runtime.engine
    rule = add_rule(db, ForwardRuleIn(name="to-pacs", peer="pacs"), user="root")
    enqueue(db, ForwardRule(id=rule.id, peer="pacs"), [series_uid])
    [item] = items(db)
    mark_failed(db, item, "cannot reach PACS@10.0.0.9:104", max_attempts=1, backoff=timedelta(0))


def test_the_forwarding_page_is_for_site_admins(site: Site) -> None:
    browser_login(site.client, "alice")
    refused = site.client.get(PAGE)
    assert refused.status_code == 403 and "site admins" in refused.text
    browser_login(site.client, "root")
    page = site.client.get(PAGE)
    assert page.status_code == 200
    assert "No forwarding rules." in page.text and "No dead letters." in page.text


def test_an_admin_creates_a_rule_and_retries_a_dead_letter_from_the_page(site: Site) -> None:
    browser_login(site.client, "root")
    bad = post_form(site.client, PAGE, name="ct", peer="pacs", query='{"term": {"Nope": 1}}')
    assert "Nope" in flash_of(bad)
    shown = post_form(site.client, PAGE, name="ct", peer="pacs", query='{"term": {"Modality": "CT"}}', enabled="true")  # fmt: skip
    assert flash_of(shown) == "forwarding rule ct created" and "Modality" in shown
    dead_letter(site, site.series["lung"].series)
    page = site.client.get(PAGE).text
    assert site.series["lung"].series in page and "cannot reach PACS@10.0.0.9:104" in page
    [item] = items(site.runtime.engine, ItemState.DEAD)
    after = post_form(site.client, f"{PAGE}/items/{item.id}/retry")
    assert flash_of(after) == "series queued again" and "No dead letters." in after
    assert [i.state for i in items(site.runtime.engine, ItemState.PENDING)] == [ItemState.PENDING]


@pytest.mark.orthanc
def test_the_run_page_sends_its_dicom_results_to_a_peer(site: Site, orthanc: Orthanc) -> None:
    root = site.tokens["root"]
    assert site.client.put("/api/dicom/peers/pacs", json=orthanc.peer().model_dump(), headers=root).is_success  # fmt: skip
    engine = FakeEngine(series_workflow("review", "op"))
    site.client.app.state.runtime.workflow_engine = engine  # type: ignore[attr-defined]
    liver, lung = site.series["liver"], site.series["lung"]
    started = site.client.post("/api/flow/workflows/review/runs", json={"series": [liver.series]}, headers=root)  # fmt: skip
    assert started.status_code == 201, started.text
    run_id = started.json()["run_id"]
    engine.add_task(run_id, "series.op", TaskState.SUCCESS, 0, liver.series)
    result = records.ResultRecord(
        id=None,
        run_id=run_id,
        series_instance_uid=liver.series,
        operator="op",
        kind=ResultKind.DICOM,
        key=f"dicom/{lung.series}",
        name="result",
        size_bytes=0,
        result_series_uid=lung.series,
        study_instance_uid=lung.study,
    )
    records.add_results(site.runtime.engine, [result])
    browser_login(site.client, "root")
    run_page = site.client.get(f"/ui/runs/{run_id}").text
    assert 'id="send-form"' in run_page
    form = {"peer": "pacs", "csrf_token": csrf_of(run_page)}
    sent = site.client.post(f"/ui/runs/{run_id}/send", data=form)
    assert sent.status_code == 200, sent.text
    assert f"{len(lung.sops)} instance(s) sent" in sent.text
    assert len(series_in(orthanc, lung.series)) == len(lung.sops)
    unknown = site.client.post(f"/ui/runs/{run_id}/send", data={**form, "peer": "nowhere"})
    assert unknown.status_code == 400 and "unknown peer" in unknown.text
    assert auth_for(site.client, "root")  # the session's login still works after the sends
