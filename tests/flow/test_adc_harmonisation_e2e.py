"""adc-harmonisation end to end through real Airflow: two operator steps joined by what
the first delivered.

A noise-free multi-b DWI phantom and its region SEG go into the store by STOW-RS. Per
series the adc-map step (one task: stage, run, deliver) stores an ADC map; roi-series
names that map and the SEG; the roi-stats step stages the DWI series with both and
delivers roi_stats.json, whose segments are the phantom's regions.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from tests.flow.conftest import Site, wait_for_workflow
from tests.flow.support import series_state, wait_for_run

from jip.flow.worker.api_client import JipClient
from jip.samples import random_patient, write_datasets
from jip.samples_dwi import REGIONS, b0_images, dwi_series, region_segmentation

pytestmark = pytest.mark.slow

DAG = "adc-harmonisation"


@pytest.fixture(scope="module")
def adc_run(site: Site, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("dwi")
    dwi = dwi_series(patient=random_patient(random.Random(7), 7), noise=0.0)
    seg = region_segmentation(b0_images(dwi))
    seg_path = folder / "seg" / "seg.dcm"
    seg_path.parent.mkdir()
    seg.save_as(seg_path)
    with JipClient(str(site.api.base_url)) as client:
        client.store_instances([*write_datasets(dwi, folder / "dwi"), seg_path])
    dwi_uid, seg_uid = str(dwi[0].SeriesInstanceUID), str(seg.SeriesInstanceUID)
    wait_for_workflow(site.engine, DAG)
    answer = site.api.post(
        f"/api/flow/workflows/{DAG}/runs",
        json={"series": [dwi_uid], "params": {"segmentations": {dwi_uid: seg_uid}}},
    )
    assert answer.status_code == 201, answer.text
    run_id = answer.json()["run_id"]
    detail = wait_for_run(site.api, run_id)
    results = site.api.get(f"/api/flow/runs/{run_id}/results").json()
    return {"detail": detail, "results": results, "dwi": dwi_uid, "seg": seg_uid}


def test_each_operator_step_is_one_task_and_all_succeed(adc_run: dict[str, Any]) -> None:
    state = series_state(adc_run["detail"], adc_run["dwi"])
    assert state["state"] == "success", adc_run["detail"]
    assert state["tasks"] == {"adc-map": "success", "roi-series": "success",
                              "roi-stats": "success"}  # fmt: skip


def test_the_second_step_measures_what_the_first_delivered(
    site: Site, adc_run: dict[str, Any]
) -> None:
    (adc,) = [r for r in adc_run["results"] if r["kind"] == "dicom"]
    assert adc["operator"] == "adc-map" and adc["series_instance_uid"] == adc_run["dwi"]
    (stats,) = [r for r in adc_run["results"] if r["name"].endswith("roi_stats.json")]
    assert stats["operator"] == "roi-stats" and stats["series_instance_uid"] == adc_run["dwi"]
    assert stats["name"] == f"{adc['result_series_uid']}/roi_stats.json"
    download = site.api.get(stats["url"])
    assert download.status_code == 200
    document = json.loads(download.text)
    assert document["image_series_instance_uid"] == adc["result_series_uid"]
    labels = {s["segment_label"] for s in document["segments"]}
    assert labels == {region.label for region in REGIONS}
    assert {s["seg_series_instance_uid"] for s in document["segments"]} == {adc_run["seg"]}
