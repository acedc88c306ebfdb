"""How radiomics extracts: on each segment's bounding box, resampled only when asked."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from jip_sdk import find_series, load_image, read_datasets, sort_slices
from jip_sdk.phantom import AbdomenPhantom
from jip_sdk.seg import read_segment_masks
from jip_sdk.testing import run_operator_main

MAIN = Path(__file__).resolve().parents[1] / "main.py"
TEXTURE = {"feature_classes": ["firstorder", "shape", "glcm"], "bin_width": 25}


@pytest.fixture(scope="module")
def radiomics_main() -> ModuleType:
    spec = importlib.util.spec_from_file_location("radiomics_main", MAIN)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_features_on_the_bounding_box_equal_those_on_the_whole_scan(
    radiomics_main: ModuleType, inputs: dict[str, Any]
) -> None:
    import pydicom

    source = sort_slices(
        read_datasets(find_series(inputs["dir"], inputs["ct"].series_instance_uid))
    )
    image = load_image(source)
    extractor = radiomics_main.build_extractor({**TEXTURE, "resampled_spacing_mm": None})
    for segment in read_segment_masks(pydicom.dcmread(inputs["seg_path"]), source):
        whole = radiomics_main.features_for(
            extractor, image, radiomics_main.mask_image(segment, image)
        )
        cropped_image, cropped_mask = radiomics_main.crop_to_segment(image, segment)
        assert cropped_image.GetSize() < image.GetSize()
        cropped = radiomics_main.features_for(extractor, cropped_image, cropped_mask)
        assert cropped == pytest.approx(whole, rel=1e-9), segment.label


def test_resampled_spacing_comes_from_the_params(
    inputs: dict[str, Any], phantom: AbdomenPhantom, tmp_path: Path
) -> None:
    result = run_operator_main(
        MAIN,
        input_dir=inputs["dir"],
        output_dir=tmp_path,
        params={**TEXTURE, "resampled_spacing_mm": [3, 3, 3], "segment_labels": ["Liver"]},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (csv_path,) = tmp_path.glob("*/radiomics.csv")
    with csv_path.open(newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    # On 3 mm voxels the liver is counted in 27 mm3 voxels: the same organ, another grid.
    volume = float(row["original_shape_VoxelVolume"])
    assert volume % 27 == pytest.approx(0, abs=1e-6) or volume % 27 == pytest.approx(27)
    assert volume == pytest.approx(phantom.volume_ml("liver") * 1000, rel=0.1)
    assert float(row["original_glcm_Contrast"]) >= 0


def test_filtered_features_on_the_bounding_box_equal_those_on_the_whole_scan(
    radiomics_main: ModuleType, inputs: dict[str, Any]
) -> None:
    import pydicom

    params = {
        "feature_classes": ["firstorder", "glcm"],
        "bin_width": 25,
        "image_types": ["original", "log", "wavelet"],
        "log_sigma_mm": [1.5],
        "resampled_spacing_mm": None,
    }
    source = sort_slices(
        read_datasets(find_series(inputs["dir"], inputs["ct"].series_instance_uid))
    )
    image = load_image(source)
    extractor = radiomics_main.build_extractor(params)
    segments = read_segment_masks(pydicom.dcmread(inputs["seg_path"]), source)
    spleen = next(s for s in segments if s.label == "Spleen")

    whole = radiomics_main.features_for(extractor, image, radiomics_main.mask_image(spleen, image))
    pad = radiomics_main.crop_pad(params, image)
    cropped = radiomics_main.features_for(
        extractor, *radiomics_main.crop_to_segment(image, spleen, pad)
    )

    assert pad > radiomics_main.CROP_PAD_VOXELS
    assert any(name.startswith("log-sigma-1-5-mm-3D_glcm_") for name in whole)
    assert any(name.startswith("wavelet-HHH_firstorder_") for name in whole)
    assert cropped == pytest.approx(whole, rel=1e-9)
