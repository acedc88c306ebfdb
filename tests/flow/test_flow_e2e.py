"""organ-seg-radiomics end to end: real Airflow, real operators, the site's API and store.

One run on two series: a phantom CT (segmented, SEG stored, radiomics computed) and a
series that claims to be MR (organ-seg refuses it). The CT's results are checked against
the phantom's truth; the MR's failure must show in its task's log through the API.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pydicom
import pytest
from jip_sdk.phantom import AbdomenPhantom, build_abdomen_phantom
from jip_sdk.seg import read_segment_masks
from jip_sdk.series import read_datasets
from tests.flow.conftest import Site
from tests.flow.support import ingest_phantom, series_state, wait_for_run

from jip.flow.worker.api_client import JipClient

pytestmark = pytest.mark.slow

DAG = "organ-seg-radiomics"
VOLUME_TOLERANCE = 0.15
STRUCTURES = {  # SegmentLabel -> phantom structure
    "Body": "body",
    "Liver": "liver",
    "Spleen": "spleen",
    "Right kidney": "right_kidney",
    "Left kidney": "left_kidney",
}
MEAN_HU = {"Liver": 60, "Spleen": 50, "Right kidney": 150, "Left kidney": 150}


@pytest.fixture(scope="module")
def phantom() -> AbdomenPhantom:
    return build_abdomen_phantom()


@pytest.fixture(scope="module")
def organ_run(site: Site, phantom: AbdomenPhantom, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("organ")
    ct = ingest_phantom(site.runtime, phantom, folder / "ct", patient_id="E2E-CT")
    mr = ingest_phantom(
        site.runtime, build_abdomen_phantom(shape=(6, 64, 64)), folder / "mr", modality="MR"
    )
    answer = site.api.post(
        f"/api/flow/workflows/{DAG}/runs",
        json={"series": [ct.series_instance_uid, mr.series_instance_uid],
              "params": {"radiomics": {"feature_classes": ["firstorder", "shape"]}}},
    )  # fmt: skip
    assert answer.status_code == 201, answer.text
    run_id = answer.json()["run_id"]
    detail = wait_for_run(site.api, run_id)
    results = site.api.get(f"/api/flow/runs/{run_id}/results").json()
    return {"run_id": run_id, "detail": detail, "results": results, "ct": ct, "mr": mr}


def _seg_result(organ_run: dict[str, Any]) -> dict[str, Any]:
    (seg,) = [r for r in organ_run["results"] if r["kind"] == "dicom"]
    return seg


def test_ct_series_finishes_every_step(organ_run: dict[str, Any]) -> None:
    ct = series_state(organ_run["detail"], organ_run["ct"].series_instance_uid)
    assert ct["state"] == "success", organ_run["detail"]
    # One task per operator step (get-input, the operator, put-output in one).
    assert set(ct["tasks"]) == {"organ-seg", "radiomics"}


def test_seg_is_in_the_store_and_references_its_source(
    site: Site, organ_run: dict[str, Any], tmp_path: Path
) -> None:
    seg = _seg_result(organ_run)
    ct = organ_run["ct"]
    assert seg["modality"] == "SEG" and seg["operator"] == "organ-seg"
    assert seg["series_instance_uid"] == ct.series_instance_uid
    assert seg["study_instance_uid"] == ct.study_instance_uid
    with JipClient(str(site.api.base_url)) as client:
        folder = client.fetch_series(seg["result_series_uid"], tmp_path)
    (path,) = folder.glob("*.dcm")
    dataset = pydicom.dcmread(path)
    assert dataset.Modality == "SEG"
    assert dataset.ReferencedSeriesSequence[0].SeriesInstanceUID == ct.series_instance_uid
    assert dataset.StudyInstanceUID == ct.study_instance_uid


def test_segment_volumes_match_the_phantom(
    site: Site, organ_run: dict[str, Any], phantom: AbdomenPhantom, tmp_path: Path
) -> None:
    seg = _seg_result(organ_run)
    with JipClient(str(site.api.base_url)) as client:
        (path,) = client.fetch_series(seg["result_series_uid"], tmp_path).glob("*.dcm")
    masks = read_segment_masks(pydicom.dcmread(path), read_datasets(organ_run["ct"].series))
    voxel_ml = phantom.spacing_mm[0] * phantom.spacing_mm[1] * phantom.spacing_mm[2] / 1000
    found = {m.label: float(m.mask.sum()) * voxel_ml for m in masks}
    assert set(found) == set(STRUCTURES)
    for label, structure in STRUCTURES.items():
        truth = phantom.volume_ml(structure)
        assert abs(found[label] - truth) <= VOLUME_TOLERANCE * truth, (label, found[label], truth)


def test_radiomics_csv_has_a_row_per_segment_with_sane_values(
    site: Site, organ_run: dict[str, Any], phantom: AbdomenPhantom
) -> None:
    seg = _seg_result(organ_run)
    (csv_result,) = [r for r in organ_run["results"] if r["name"].endswith("radiomics.csv")]
    assert csv_result["key"].endswith(f"/{seg['result_series_uid']}/radiomics.csv")
    download = site.api.get(csv_result["url"])
    assert download.status_code == 200
    rows = list(csv.DictReader(io.StringIO(download.text)))
    assert sorted(r["segment_label"] for r in rows) == sorted(STRUCTURES)
    for row in rows:
        assert row["series_instance_uid"] == organ_run["ct"].series_instance_uid
        assert row["seg_series_instance_uid"] == seg["result_series_uid"]
        truth_mm3 = phantom.volume_ml(STRUCTURES[row["segment_label"]]) * 1000
        volume = float(row["original_shape_VoxelVolume"])
        assert abs(volume - truth_mm3) <= VOLUME_TOLERANCE * truth_mm3, row["segment_label"]
        if row["segment_label"] in MEAN_HU:
            mean = float(row["original_firstorder_Mean"])
            assert abs(mean - MEAN_HU[row["segment_label"]]) < 20, (row["segment_label"], mean)


def test_failing_operator_fails_its_task_with_its_log_and_others_finish(
    site: Site, organ_run: dict[str, Any]
) -> None:
    detail = organ_run["detail"]
    mr_uid = organ_run["mr"].series_instance_uid
    assert detail["state"] == "failed"
    mr = series_state(detail, mr_uid)
    assert mr["state"] == "failed"
    assert mr["tasks"]["organ-seg"] == "failed"
    assert mr["tasks"]["radiomics"] == "upstream_failed"
    log = site.api.get(
        f"/api/flow/runs/{organ_run['run_id']}/logs", params={"task": "organ-seg", "series": mr_uid}
    )
    assert log.status_code == 200
    assert f"input staged: {mr_uid}" in log.text  # the step's get-input part succeeded
    assert "has Modality MR; this operator needs CT" in log.text
    assert "exited with status 3" in log.text
    assert series_state(detail, organ_run["ct"].series_instance_uid)["state"] == "success"
    assert not [r for r in organ_run["results"] if r["series_instance_uid"] == mr_uid]


def test_work_folders_are_removed_after_the_run(site: Site, organ_run: dict[str, Any]) -> None:
    assert series_state(organ_run["detail"], organ_run["ct"].series_instance_uid)
    work = site.settings.resolved_flow_work_dir
    assert not (work / organ_run["run_id"]).exists()
