"""``GET /api/flow/runs/{id}/download``: a run's results (DICOM and files) as one zip.

Auth on (the ``site`` of tests/base/conftest.py); the workflow engine is the fake one,
and the results are recorded as a run's own tasks record them (with the run's token).
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from tests.base import conftest as base_site
from tests.base.support import Site, Stored, ingest_series, series_datasets
from tests.fakes.workflow_engine import FakeEngine, series_workflow

from jip.backends import storage_for
from jip.flow.result_keys import result_key

# The auth-enabled site of tests/base (its fixtures, as this module's own).
cheap_password_hashing = base_site.cheap_password_hashing  # autouse
issuer_key = base_site.issuer_key
site = base_site.site

WORKFLOW = "organ-seg"
CSV = b"label,volume_ml\nliver,1500\n"


@pytest.fixture
def catalog_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'catalog.db'}"


@pytest.fixture
def run(site: Site, tmp_path: Path) -> tuple[str, Stored]:
    """alice's run on liver's series, with a CSV file and a DICOM result series."""
    engine = FakeEngine(series_workflow(WORKFLOW, "organ-seg"))
    site.client.app.state.runtime.workflow_engine = engine  # type: ignore[attr-defined]
    liver = site.series["liver"]
    started = site.client.post(
        f"/api/flow/workflows/{WORKFLOW}/runs",
        json={"series": [liver.series]},
        headers=site.tokens["alice"],
    )
    assert started.status_code == 201, started.text
    run_id = started.json()["run_id"]
    seg = ingest_series(site.runtime, tmp_path / "spool-r", series_datasets(40), "LIVER_CT")
    settings = site.runtime.settings
    key = result_key(run_id, f"{liver.series}/organ-seg/volumes.csv")
    storage_for(settings.resolved_results_url, settings).put_bytes(key, CSV)
    results = [
        {"series_instance_uid": liver.series, "operator": "organ-seg", "kind": "file",
         "key": key, "name": "organ-seg/volumes.csv", "size_bytes": len(CSV)},
        {"series_instance_uid": liver.series, "operator": "organ-seg", "kind": "dicom",
         "key": seg.series, "name": "seg", "size_bytes": 1, "result_series_uid": seg.series,
         "study_instance_uid": seg.study, "modality": "SEG"},
    ]  # fmt: skip
    token = {"Authorization": f"Bearer {engine.run_tokens[run_id]}"}
    recorded = site.client.post(
        f"/api/flow/runs/{run_id}/results", json={"results": results}, headers=token
    )
    assert recorded.status_code == 201, recorded.text
    return run_id, seg


def test_the_zip_holds_every_result_under_its_source_series(
    site: Site, run: tuple[str, Stored]
) -> None:
    run_id, seg = run
    response = site.client.get(f"/api/flow/runs/{run_id}/download", headers=site.tokens["alice"])
    assert response.status_code == 200, response.text
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    source = site.series["liver"].series
    assert archive.read(f"{source}/organ-seg/volumes.csv") == CSV
    for instance in site.runtime.catalog.instances_of_series(seg.series):
        name = f"{source}/{seg.series}/{instance.sop_instance_uid}.dcm"
        assert archive.read(name) == site.runtime.storage.read_bytes(instance.blob_key)
    manifest = json.loads(archive.read("manifest.json"))
    assert manifest["run_id"] == run_id and manifest["instances"] == len(seg.sops)


def test_a_run_of_another_project_is_not_found_and_the_refusal_names_nothing(
    site: Site, run: tuple[str, Stored]
) -> None:
    run_id, _ = run
    response = site.client.get(f"/api/flow/runs/{run_id}/download", headers=site.tokens["bob"])
    assert response.status_code == 404
    assert "volumes.csv" not in response.text


def test_a_run_download_is_audited(site: Site, run: tuple[str, Stored]) -> None:
    run_id, seg = run
    site.client.get(f"/api/flow/runs/{run_id}/download", headers=site.tokens["alice"])
    entries = site.client.get(
        "/api/audit", params={"action": "flow.run."}, headers=site.tokens["root"]
    ).json()
    actions = {e["action"]: e for e in entries if e["target"] == f"run:{run_id}"}
    assert actions["flow.run.download"]["detail"]["instances"] == len(seg.sops)
    assert actions["flow.run.download"]["detail"]["files"] == 1
    assert actions["flow.run.download.done"]["detail"]["complete"] is True
