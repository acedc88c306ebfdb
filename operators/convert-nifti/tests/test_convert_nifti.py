"""convert-nifti, run as a subprocess as the runner starts it, on the JIP phantom."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk
from jip_sdk import ExitCode, load_image, read_datasets
from jip_sdk.phantom import (
    AbdomenPhantom,
    PhantomSeries,
    build_abdomen_phantom,
    write_ct_series,
    write_truth_seg,
)
from jip_sdk.testing import run_operator_main

MAIN = Path(__file__).resolve().parents[1] / "main.py"


@pytest.fixture(scope="module")
def phantom() -> AbdomenPhantom:
    return build_abdomen_phantom(shape=(12, 64, 64), spacing_mm=(6.0, 6.0, 15.0))


@pytest.fixture(scope="module")
def ct(phantom: AbdomenPhantom, tmp_path_factory: pytest.TempPathFactory) -> PhantomSeries:
    series = write_ct_series(phantom, tmp_path_factory.mktemp("input"))
    # Number the files against the slice order: the operator must sort by position.
    files = sorted(series.series.path.glob("*.dcm"))
    for index, path in enumerate(files):
        path.rename(path.with_name(f"tmp-{len(files) - index:04d}.dcm"))
    return series


@pytest.fixture(scope="module")
def converted(ct: PhantomSeries, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    output = tmp_path_factory.mktemp("output")
    result = run_operator_main(MAIN, input_dir=ct.series.path.parent, output_dir=output)
    assert result.returncode == 0, result.stdout + result.stderr
    folder = output / ct.series_instance_uid
    return {
        "image": sitk.ReadImage(str(folder / "image.nii.gz")),
        "sidecar": json.loads((folder / "image.json").read_text()),
    }


def test_voxels_are_the_phantom_in_hu_ordered_by_slice_position(
    converted: dict[str, Any], phantom: AbdomenPhantom
) -> None:
    image = converted["image"]
    assert image.GetPixelID() == sitk.sitkInt16
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), phantom.hu)


def test_geometry_survives_the_nifti_round_trip(
    converted: dict[str, Any], ct: PhantomSeries
) -> None:
    reference = load_image(read_datasets(ct.series))
    image = converted["image"]
    assert image.GetSize() == reference.GetSize()
    np.testing.assert_allclose(image.GetSpacing(), reference.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(image.GetOrigin(), reference.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(image.GetDirection(), reference.GetDirection(), atol=1e-6)


def test_sidecar_has_technical_fields_and_no_patient_identity(
    converted: dict[str, Any], ct: PhantomSeries
) -> None:
    sidecar = converted["sidecar"]
    assert sidecar["SeriesInstanceUID"] == ct.series_instance_uid
    assert sidecar["Modality"] == "CT" and sidecar["RescaleType"] == "HU"
    assert sidecar["PixelSpacing"] == [6.0, 6.0]
    assert sidecar["VoxelSpacingMm"] == [6.0, 6.0, 15.0]
    assert sidecar["NumberOfSlices"] == 12
    assert not [key for key in sidecar if key.startswith("Patient")]
    text = json.dumps(sidecar)
    for identifying in ("Phantom^Abdomen", "JIP-PHANTOM-001", "19700101", "20240315"):
        assert identifying not in text


def test_float32_and_filename_follow_params(ct: PhantomSeries, tmp_path: Path) -> None:
    result = run_operator_main(
        MAIN,
        input_dir=ct.series.path.parent,
        output_dir=tmp_path,
        params={"dtype": "float32", "filename": "ct"},
    )
    assert result.returncode == 0, result.stdout
    image = sitk.ReadImage(str(tmp_path / ct.series_instance_uid / "ct.nii.gz"))
    assert image.GetPixelID() == sitk.sitkFloat32
    assert (tmp_path / ct.series_instance_uid / "ct.json").exists()


@pytest.mark.parametrize(
    ("params", "message"),
    [({"dtype": "int8"}, "dtype"), ({"filename": "../escape"}, "filename")],
)
def test_bad_params_fail_with_a_clear_message(
    ct: PhantomSeries, tmp_path: Path, params: dict[str, Any], message: str
) -> None:
    result = run_operator_main(
        MAIN, input_dir=ct.series.path.parent, output_dir=tmp_path, params=params
    )
    assert result.returncode == ExitCode.BAD_PARAMS
    assert message in result.stdout


def test_seg_series_is_rejected_as_not_an_image(
    ct: PhantomSeries, phantom: AbdomenPhantom, tmp_path: Path
) -> None:
    write_truth_seg(phantom, ct.series, tmp_path / "input", organs=("liver",))
    result = run_operator_main(MAIN, input_dir=tmp_path / "input", output_dir=tmp_path / "out")
    assert result.returncode == ExitCode.BAD_INPUT
    assert "Modality SEG" in result.stdout


def test_series_with_a_missing_slice_is_rejected(ct: PhantomSeries, tmp_path: Path) -> None:
    gappy = tmp_path / "input" / ct.series_instance_uid
    gappy.mkdir(parents=True)
    files = sorted(ct.series.path.glob("*.dcm"))
    for path in files[:5] + files[6:]:
        (gappy / path.name).write_bytes(path.read_bytes())
    result = run_operator_main(MAIN, input_dir=tmp_path / "input", output_dir=tmp_path / "out")
    assert result.returncode == ExitCode.BAD_INPUT
    assert "not uniform" in result.stdout
