"""seg-radiomics end to end: radiomics on SEGs made outside JIP, through real Airflow.

A phantom CT goes into the store; two SEGs of it are made with highdicom alone (an
annotator's tool, not JIP's SDK), one of them stripped of its ReferencedSeriesSequence
so that only its frames say where it came from, and both arrive by STOW-RS. The run
on the two SEGs and on the CT itself (no SEG: it must fail alone) fetches each SEG's
source series and yields features whose volumes and means are the phantom's.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pytest
from jip_sdk.phantom import ORGANS, AbdomenPhantom, build_abdomen_phantom
from jip_sdk.series import read_datasets, sort_slices
from pydicom.sr.codedict import codes
from tests.flow.conftest import Site, wait_for_workflow
from tests.flow.support import ingest_phantom, series_state, wait_for_run

from jip.flow.worker.api_client import JipClient

pytestmark = pytest.mark.slow

DAG = "seg-radiomics"
ORGAN_HU = {organ.name: organ.hu for organ in ORGANS}


def outside_seg(phantom: AbdomenPhantom, ct: Any, organs: list[str], folder: Path) -> Path:
    """A SEG as another tool writes it: highdicom on the CT files, nothing of JIP's."""
    source = sort_slices(read_datasets(ct.series))
    algorithm = hd.AlgorithmIdentificationSequence(
        name="Outside annotator", family=codes.cid7162.ArtificialIntelligence, version="2.0"
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=organ,
            segmented_property_category=codes.SCT.Organ,
            segmented_property_type=codes.SCT.Organ,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for number, organ in enumerate(organs, start=1)
    ]
    pixels = np.stack([phantom.masks[o] for o in organs], axis=-1).astype(np.uint8)
    seg = hd.seg.Segmentation(
        source_images=source,
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=77,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="Elsewhere Inc.",
        manufacturer_model_name="Annotator",
        software_versions="2.0",
        device_serial_number="42",
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "seg.dcm"
    seg.save_as(path)
    return path


@pytest.fixture(scope="module")
def seg_run(site: Site, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("outside")
    phantom = build_abdomen_phantom()
    ct = ingest_phantom(site.runtime, phantom, folder / "ct", patient_id="OUTSIDE-SEG")
    named = outside_seg(phantom, ct, ["liver", "spleen"], folder / "named")
    bare = outside_seg(phantom, ct, ["left_kidney"], folder / "bare")
    dataset = pydicom.dcmread(bare)
    del dataset.ReferencedSeriesSequence  # only the frames' source images remain
    dataset.save_as(bare)
    with JipClient(str(site.api.base_url)) as client:
        assert client.store_instances([named, bare]) == 2  # STOW-RS, as any tool sends
    segs = {str(pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID): p
            for p in (named, bare)}  # fmt: skip
    wait_for_workflow(site.engine, DAG)
    series = [*segs, ct.series_instance_uid]
    answer = site.api.post(f"/api/flow/workflows/{DAG}/runs", json={"series": series})
    assert answer.status_code == 201, answer.text
    run_id = answer.json()["run_id"]
    detail = wait_for_run(site.api, run_id)
    results = site.api.get(f"/api/flow/runs/{run_id}/results").json()
    return {"run_id": run_id, "detail": detail, "results": results, "ct": ct, "segs": segs,
            "phantom": phantom, "named": named, "bare": bare}  # fmt: skip


def _rows(site: Site, seg_run: dict[str, Any], seg_uid: str) -> list[dict[str, str]]:
    (result,) = [r for r in seg_run["results"] if r["series_instance_uid"] == seg_uid]
    assert result["name"] == f"{seg_uid}/radiomics.csv" and result["operator"] == "radiomics"
    download = site.api.get(result["url"])
    assert download.status_code == 200
    return list(csv.DictReader(io.StringIO(download.text)))


def test_each_seg_finds_its_source_and_gets_features(site: Site, seg_run: dict[str, Any]) -> None:
    phantom: AbdomenPhantom = seg_run["phantom"]
    ct_uid = seg_run["ct"].series_instance_uid
    for seg_uid, path in seg_run["segs"].items():
        state = series_state(seg_run["detail"], seg_uid)
        assert state["state"] == "success", seg_run["detail"]
        assert set(state["tasks"]) == {"find-source", "radiomics"}
        rows = _rows(site, seg_run, seg_uid)
        organs = ["liver", "spleen"] if path == seg_run["named"] else ["left_kidney"]
        assert [r["segment_label"] for r in rows] == organs
        for row in rows:
            assert row["series_instance_uid"] == ct_uid
            assert row["seg_series_instance_uid"] == seg_uid
            truth_mm3 = phantom.volume_ml(row["segment_label"]) * 1000
            assert float(row["original_shape_VoxelVolume"]) == pytest.approx(truth_mm3, rel=1e-6)
            assert float(row["original_firstorder_Mean"]) == pytest.approx(
                ORGAN_HU[row["segment_label"]], abs=3
            )


def test_a_series_that_is_no_seg_fails_alone_saying_why(
    site: Site, seg_run: dict[str, Any]
) -> None:
    ct_uid = seg_run["ct"].series_instance_uid
    assert seg_run["detail"]["state"] == "failed"
    ct = series_state(seg_run["detail"], ct_uid)
    assert ct["tasks"]["find-source"] == "failed"
    log = site.api.get(
        f"/api/flow/runs/{seg_run['run_id']}/logs", params={"task": "find-source", "series": ct_uid}
    )
    assert "has Modality CT; this workflow takes SEG series" in log.text
    assert not [r for r in seg_run["results"] if r["series_instance_uid"] == ct_uid]


def test_seg_to_nifti_exports_the_outside_seg_with_its_image(
    site: Site, seg_run: dict[str, Any]
) -> None:
    (named,) = [uid for uid, path in seg_run["segs"].items() if path == seg_run["named"]]
    wait_for_workflow(site.engine, "seg-to-nifti")
    answer = site.api.post("/api/flow/workflows/seg-to-nifti/runs", json={"series": [named]})
    assert answer.status_code == 201, answer.text
    run_id = answer.json()["run_id"]
    detail = wait_for_run(site.api, run_id)
    assert detail["state"] == "success", detail
    results = {r["name"]: r for r in site.api.get(f"/api/flow/runs/{run_id}/results").json()}
    assert set(results) == {
        f"{named}/{name}" for name in ("labels.nii.gz", "image.nii.gz", "labels.json")
    }
    table = site.api.get(results[f"{named}/labels.json"]["url"]).json()
    assert table["source_series_instance_uid"] == seg_run["ct"].series_instance_uid
    phantom: AbdomenPhantom = seg_run["phantom"]
    assert [(e["label"], e["voxels"]) for e in table["labels"]] == [
        (organ, int(phantom.masks[organ].sum())) for organ in ("liver", "spleen")
    ]
