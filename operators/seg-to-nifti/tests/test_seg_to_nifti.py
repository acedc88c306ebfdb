"""seg-to-nifti, run as a subprocess as the runner starts it, on the phantom and its truth SEG."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk
from jip_sdk import ExitCode, load_image, read_datasets, sort_slices
from jip_sdk.phantom import AbdomenPhantom, build_abdomen_phantom, write_ct_series, write_truth_seg
from jip_sdk.seg import SegAlgorithm, SegmentSpec, build_segmentation
from jip_sdk.testing import run_operator_main
from pydicom.sr.codedict import codes

MAIN = Path(__file__).resolve().parents[1] / "main.py"
ORGANS = {"Liver": "liver", "Spleen": "spleen", "Right kidney": "right_kidney", "Left kidney": "left_kidney"}  # fmt: skip


@pytest.fixture(scope="module")
def phantom() -> AbdomenPhantom:
    return build_abdomen_phantom(shape=(12, 64, 64), spacing_mm=(6.0, 6.0, 15.0))


@pytest.fixture(scope="module")
def converted(phantom: AbdomenPhantom, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    input_dir = tmp_path_factory.mktemp("input")
    ct = write_ct_series(phantom, input_dir)
    seg_dir = write_truth_seg(phantom, ct.series, input_dir).parent
    output = tmp_path_factory.mktemp("output")
    result = run_operator_main(MAIN, input_dir=input_dir, output_dir=output)
    assert result.returncode == 0, result.stdout + result.stderr
    return {"ct": ct, "out": output / seg_dir.name, "seg_uid": seg_dir.name}


def test_the_label_map_holds_each_segment_number_where_the_truth_is(
    converted: dict[str, Any], phantom: AbdomenPhantom
) -> None:
    labels = sitk.ReadImage(str(converted["out"] / "labels.nii.gz"))
    values = sitk.GetArrayFromImage(labels)
    assert values.dtype == np.uint16 and values.shape == phantom.hu.shape
    table = json.loads((converted["out"] / "labels.json").read_text())
    assert table["seg_series_instance_uid"] == converted["seg_uid"]
    assert table["source_series_instance_uid"] == converted["ct"].series_instance_uid
    assert [e["label"] for e in table["labels"]] == list(ORGANS)
    for entry in table["labels"]:
        truth = phantom.masks[ORGANS[entry["label"]]]
        assert np.array_equal(values == entry["value"], truth), entry["label"]
        assert entry["voxels"] == int(truth.sum()) and entry["lost_to_overlap"] == 0
        assert entry["volume_ml"] == pytest.approx(phantom.volume_ml(ORGANS[entry["label"]]))
        assert entry["category"]["scheme"] == "SCT" and entry["type"]["meaning"]
    assert set(np.unique(values)) == {0, *(e["value"] for e in table["labels"])}


def test_image_and_labels_share_the_dicom_geometry(converted: dict[str, Any]) -> None:
    dicom = load_image(sort_slices(read_datasets(converted["ct"].series)))
    image = sitk.ReadImage(str(converted["out"] / "image.nii.gz"))
    labels = sitk.ReadImage(str(converted["out"] / "labels.nii.gz"))
    for volume in (image, labels):
        assert volume.GetSize() == dicom.GetSize()
        assert np.allclose(volume.GetOrigin(), dicom.GetOrigin(), atol=1e-3)
        assert np.allclose(volume.GetSpacing(), dicom.GetSpacing(), atol=1e-4)
        assert np.allclose(volume.GetDirection(), dicom.GetDirection(), atol=1e-6)
    assert np.array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(dicom))


def _overlapping_input(phantom: AbdomenPhantom, root: Path) -> Path:
    """A CT and a SEG whose second segment (Body) covers its first (Liver)."""
    ct = write_ct_series(phantom, root)
    seg = build_segmentation(
        read_datasets(ct.series),
        [
            SegmentSpec(
                "Liver", codes.SCT.AnatomicalStructure, codes.SCT.Liver, phantom.masks["liver"]
            ),
            SegmentSpec(
                "Body", codes.SCT.AnatomicalStructure, codes.SCT.Abdomen, phantom.masks["body"]
            ),
        ],
        algorithm=SegAlgorithm(name="test", version="1"),
        series_description="overlap",
    )
    folder = root / str(seg.SeriesInstanceUID)
    folder.mkdir()
    seg.save_as(folder / "seg.dcm")
    return folder


def test_overlaps_go_to_the_later_segment_or_are_refused(
    phantom: AbdomenPhantom, tmp_path: Path
) -> None:
    seg_dir = _overlapping_input(phantom, tmp_path / "input")
    later = run_operator_main(MAIN, input_dir=tmp_path / "input", output_dir=tmp_path / "later")
    assert later.returncode == 0, later.stderr
    table = json.loads((tmp_path / "later" / seg_dir.name / "labels.json").read_text())
    liver, body = table["labels"]
    assert liver["voxels"] == 0 and liver["lost_to_overlap"] == int(phantom.masks["liver"].sum())
    assert body["voxels"] == int(phantom.masks["body"].sum())
    refused = run_operator_main(
        MAIN,
        input_dir=tmp_path / "input",
        output_dir=tmp_path / "fail",
        params={"on_overlap": "fail"},
    )
    assert refused.returncode == ExitCode.BAD_INPUT
    assert "segment 2 (Body) overlaps an earlier one" in refused.stderr + refused.stdout


def test_an_input_without_a_seg_is_refused(phantom: AbdomenPhantom, tmp_path: Path) -> None:
    write_ct_series(phantom, tmp_path / "input")
    result = run_operator_main(MAIN, input_dir=tmp_path / "input", output_dir=tmp_path / "out")
    assert result.returncode == ExitCode.BAD_INPUT
    assert "no SEG series" in result.stderr + result.stdout


def test_a_seg_without_its_image_says_what_is_missing(
    phantom: AbdomenPhantom, tmp_path: Path
) -> None:
    input_dir = tmp_path / "input"
    ct = write_ct_series(phantom, input_dir)
    seg_dir = write_truth_seg(phantom, ct.series, input_dir).parent
    shutil.rmtree(ct.series.path)
    result = run_operator_main(MAIN, input_dir=input_dir, output_dir=tmp_path / "out")
    assert result.returncode == ExitCode.BAD_INPUT, result.stderr
    assert ct.series_instance_uid in result.stderr + result.stdout
    assert seg_dir.exists()
