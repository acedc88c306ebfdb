"""The run page's human step: upload a corrected SEG from the browser form."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from jip_sdk.phantom import build_abdomen_phantom, write_ct_series, write_truth_seg
from tests.base.support import add_user, auth_for
from tests.fakes.workflow_engine import FakeEngine, series_workflow
from tests.ui.pages.support import browser_login, csrf_of

from jip.base.schema import ProjectRole
from jip.flow.engine import RunState, TaskState
from jip.meta.indexer import Indexer
from jip.runtime import Runtime


@pytest.fixture
def waiting_run(
    runtime: Runtime, app: FastAPI, client: TestClient, tmp_path: Path
) -> tuple[str, str, bytes]:
    """(run page URL, CT series UID, a corrected SEG of it) with the review step waiting."""
    phantom = build_abdomen_phantom(shape=(6, 64, 64), spacing_mm=(6.0, 6.0, 20.0))
    ct = write_ct_series(phantom, tmp_path / "ct")
    seg = write_truth_seg(phantom, ct.series, tmp_path / "seg", organs=("liver",)).read_bytes()
    for path in sorted(ct.series.path.glob("*.dcm")):
        runtime.ingestor.ingest_file(path)
    Indexer(catalog=runtime.catalog, storage=runtime.storage, index=runtime.index).run_once()
    add_user(runtime, "rita", projects={"default": ProjectRole.RESEARCHER})
    engine = FakeEngine(series_workflow("annotate-review", "fake-op", review=True))
    app.state.runtime.workflow_engine = engine
    started = client.post(
        "/api/flow/workflows/annotate-review/runs",
        json={"series": [ct.series_instance_uid]},
        headers=auth_for(client, "rita"),
    )
    assert started.status_code == 201, started.text
    run_id = started.json()["run_id"]
    engine.set_run(run_id, RunState.RUNNING)
    engine.add_task(run_id, "series.annotate", TaskState.WAITING, 0, ct.series_instance_uid)
    browser_login(client, "rita")
    return f"/ui/runs/{run_id}", ct.series_instance_uid, seg


def test_a_corrected_seg_uploaded_from_the_run_page_completes_the_review(
    waiting_run: tuple[str, str, bytes], client: TestClient
) -> None:
    run_url, series_uid, seg = waiting_run
    page = client.get(run_url).text
    assert 'enctype="multipart/form-data"' in page and "Upload corrected SEG" in page
    form = f"{run_url}/tasks/annotate/seg"
    files = {"seg": ("corrected.dcm", seg, "application/dicom")}
    refused = client.post(form, files=files, follow_redirects=False)
    assert refused.status_code == 403  # no CSRF token
    uploaded = client.post(
        form, data={"csrf_token": csrf_of(page)}, files=files, follow_redirects=False
    )
    assert uploaded.status_code == 303, uploaded.text
    assert uploaded.headers["location"] == run_url
    run_id = run_url.rsplit("/", 1)[-1]
    review = client.get(
        f"/api/flow/runs/{run_id}/reviews/{series_uid}", headers=auth_for(client, "rita")
    ).json()
    assert review["done"] and review["seg_series_instance_uid"]


def test_a_refused_upload_is_shown_on_the_run_page(
    waiting_run: tuple[str, str, bytes], client: TestClient
) -> None:
    run_url, _, _ = waiting_run
    csrf = csrf_of(client.get(run_url).text)
    files = {"seg": ("notes.txt", b"not a DICOM file", "text/plain")}
    refused = client.post(f"{run_url}/tasks/annotate/seg", data={"csrf_token": csrf}, files=files)
    assert refused.status_code == 400
    assert 'id="upload-error"' in refused.text and "not DICOM" in refused.text
    assert "Mark annotate done" in refused.text  # still the run page, with its actions
    assert "data-refresh-s" not in refused.text  # a reload would post the form again
