"""roi-stats, run as a subprocess as the runner starts it, on an ADC map of the phantom,
its DWI series and a SEG drawn on the DWI: the statistics per segment equal NumPy's on
the phantom's known masks, the multi-b series is not measured, and inputs it cannot
pair are refused."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from jip_sdk import ExitCode, sort_slices
from jip_sdk.testing import run_operator_main
from pydicom.dataset import Dataset

from jip.samples import random_patient, write_datasets
from jip.samples_dwi import adc_map_series, b0_images, dwi_series, phantom, region_segmentation

MAIN = Path(__file__).resolve().parents[1] / "main.py"
GRID = {"slices": 3, "rows": 32, "columns": 32}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    patient = random_patient(random.Random(7), 7)
    dwi = dwi_series(patient=patient, seed=7, **GRID)
    adc = adc_map_series(
        patient=patient, study_instance_uid=str(dwi[0].StudyInstanceUID), seed=8, **GRID
    )
    for ds in adc:  # fitted from that DWI: the same frame of reference
        ds.FrameOfReferenceUID = dwi[0].FrameOfReferenceUID
    seg = region_segmentation(b0_images(dwi))
    folder = tmp_path_factory.mktemp("input")
    for series in (dwi, adc):
        write_datasets(series, folder / str(series[0].SeriesInstanceUID))
    seg_dir = folder / str(seg.SeriesInstanceUID)
    seg_dir.mkdir()
    seg.save_as(seg_dir / "seg.dcm")
    return {"dir": folder, "dwi": dwi, "adc": adc, "seg": seg}


def _run(input_dir: Path, output_dir: Path, params: dict[str, Any] | None = None) -> Any:
    return run_operator_main(MAIN, input_dir=input_dir, output_dir=output_dir, params=params)


def _numpy_stats(adc_dir: Path) -> dict[str, dict[str, float]]:
    """What NumPy computes on the ADC map read independently, in the phantom's masks."""
    ordered = sort_slices([pydicom.dcmread(p) for p in sorted(adc_dir.glob("*.dcm"))])
    volume = np.stack([ds.pixel_array * float(ds.RescaleSlope) for ds in ordered])
    found = {}
    for label, mask in phantom(GRID["slices"], GRID["rows"], GRID["columns"]).masks.items():
        x = volume[mask]
        found[label] = {
            "n": x.size,
            "sum": float(x.sum()),
            "mean": float(x.mean()),
            "m2": float(((x - x.mean()) ** 2).sum()),
            "variance": float(x.var(ddof=1)),
            "min": float(x.min()),
            "max": float(x.max()),
        }
    return found


def test_statistics_per_segment_equal_numpy_on_the_adc_map(
    inputs: dict[str, Any], tmp_path: Path
) -> None:
    result = _run(inputs["dir"], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    adc_uid = str(inputs["adc"][0].SeriesInstanceUID)
    # the multi-b DWI series has three images per position: it is not measured
    assert sorted(p.name for p in tmp_path.iterdir()) == [adc_uid]
    document = json.loads((tmp_path / adc_uid / "roi_stats.json").read_text())
    assert document["image_series_instance_uid"] == adc_uid
    expected = _numpy_stats(inputs["dir"] / adc_uid)
    assert [s["segment_label"] for s in document["segments"]] == list(expected)
    for segment in document["segments"]:
        assert segment["seg_series_instance_uid"] == str(inputs["seg"].SeriesInstanceUID)
        want = expected[segment["segment_label"]]
        assert segment["n"] == want["n"]
        for key in ("sum", "mean", "m2", "variance", "min", "max"):
            assert segment[key] == pytest.approx(want[key], rel=1e-12), key


def test_a_named_image_series_is_measured_alone(inputs: dict[str, Any], tmp_path: Path) -> None:
    b0 = b0_images(inputs["dwi"])
    folder = tmp_path / "in"
    write_datasets(b0, folder / str(b0[0].SeriesInstanceUID))
    write_datasets(inputs["adc"], folder / str(inputs["adc"][0].SeriesInstanceUID))
    seg_dir = folder / str(inputs["seg"].SeriesInstanceUID)
    seg_dir.mkdir()
    inputs["seg"].save_as(seg_dir / "seg.dcm")
    uid = str(b0[0].SeriesInstanceUID)
    result = _run(folder, tmp_path / "out", {"image_series_uid": uid})
    assert result.returncode == 0, result.stdout + result.stderr
    assert [p.name for p in (tmp_path / "out").iterdir()] == [uid]


def test_input_without_a_seg_is_unusable(inputs: dict[str, Any], tmp_path: Path) -> None:
    adc: list[Dataset] = inputs["adc"]
    write_datasets(adc, tmp_path / "in" / str(adc[0].SeriesInstanceUID))
    result = _run(tmp_path / "in", tmp_path / "out")
    assert result.returncode == ExitCode.BAD_INPUT
    assert "no SEG series" in result.stdout + result.stderr


def test_a_seg_without_an_image_in_its_frame_of_reference_is_unusable(
    inputs: dict[str, Any], tmp_path: Path
) -> None:
    other = adc_map_series(patient=random_patient(random.Random(9), 9), **GRID)
    folder = tmp_path / "in"
    write_datasets(other, folder / str(other[0].SeriesInstanceUID))
    seg_dir = folder / str(inputs["seg"].SeriesInstanceUID)
    seg_dir.mkdir(parents=True)
    inputs["seg"].save_as(seg_dir / "seg.dcm")
    result = _run(folder, tmp_path / "out")
    assert result.returncode == ExitCode.BAD_INPUT
    assert "no image series in its frame of reference" in result.stdout + result.stderr
