"""adc-map, run as a subprocess as the runner starts it, on the DWI phantom of known ADC
(jip.samples_dwi): the fit recovers each region's ADC without and with noise, and the
map is a valid derived MR series on the source geometry that names its source images."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from jip_sdk import ExitCode, sort_slices
from jip_sdk.testing import dciodvfy_errors, run_operator_main
from pydicom.dataset import Dataset

from jip.samples import random_patient, write_datasets
from jip.samples_dwi import REGIONS, b0_images, dwi_series, phantom

MAIN = Path(__file__).resolve().parents[1] / "main.py"
SLICES, ROWS, COLUMNS = 3, 40, 40


def _run(tmp: Path, dwi: list[Dataset], params: dict[str, Any] | None = None) -> dict[str, Any]:
    input_dir, output_dir = tmp / "in", tmp / "out"
    uid = str(dwi[0].SeriesInstanceUID)
    write_datasets(dwi, input_dir / uid)
    result = run_operator_main(MAIN, input_dir=input_dir, output_dir=output_dir, params=params)
    files = sorted((output_dir / uid).glob("*.dcm")) if result.returncode == 0 else []
    maps = sort_slices([pydicom.dcmread(f) for f in files]) if files else []
    return {"result": result, "files": files, "maps": maps}


def _adc(maps: list[Dataset]) -> np.ndarray:
    """The map's real-world values in mm²/s."""
    return np.stack([ds.pixel_array * float(ds.RescaleSlope) for ds in maps]) * 1e-6


def _dwi(noise: float | None, seed: int) -> list[Dataset]:
    patient = random_patient(random.Random(seed), seed)
    return dwi_series(
        patient=patient, noise=noise, slices=SLICES, rows=ROWS, columns=COLUMNS, seed=seed
    )


@pytest.fixture(scope="module")
def noise_free(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    dwi = _dwi(0.0, 1)
    run = _run(tmp_path_factory.mktemp("noise-free"), dwi)
    assert run["result"].returncode == 0, run["result"].stdout + run["result"].stderr
    return run | {"dwi": dwi}


def test_noise_free_fit_recovers_every_regions_adc(noise_free: dict[str, Any]) -> None:
    adc = _adc(noise_free["maps"])
    truth = phantom(SLICES, ROWS, COLUMNS)
    for region in REGIONS:
        inside = adc[truth.masks[region.label]]
        # only the rounding of stored signal and map (1e-6 mm²/s) separates fit and truth
        np.testing.assert_allclose(inside, region.adc, rtol=0.01)


def test_noisy_fit_recovers_every_regions_mean_adc(tmp_path: Path) -> None:
    run = _run(tmp_path, _dwi(None, 2))  # dwi_v1's noise level
    assert run["result"].returncode == 0, run["result"].stderr
    adc = _adc(run["maps"])
    truth = phantom(SLICES, ROWS, COLUMNS)
    for region in REGIONS:
        inside = adc[truth.masks[region.label]]
        assert abs(float(np.mean(inside)) - region.adc) < 0.03 * region.adc, region.label
        assert float(np.std(inside)) > 0  # the noise shows in the map
    assert float(np.max(adc[truth.adc == 0])) == 0.0  # air is background


def test_the_map_is_on_the_source_geometry_and_names_its_sources(
    noise_free: dict[str, Any],
) -> None:
    maps, dwi = noise_free["maps"], noise_free["dwi"]
    b0 = sort_slices(b0_images(dwi))
    assert len(maps) == SLICES
    assert len({str(ds.SeriesInstanceUID) for ds in maps}) == 1
    assert str(maps[0].SeriesInstanceUID) != str(dwi[0].SeriesInstanceUID)
    dwi_uids = {str(ds.SOPInstanceUID) for ds in dwi}
    for image, source in zip(maps, b0, strict=True):
        assert image.ImagePositionPatient == source.ImagePositionPatient
        assert image.ImageOrientationPatient == source.ImageOrientationPatient
        assert image.PixelSpacing == source.PixelSpacing
        assert image.FrameOfReferenceUID == source.FrameOfReferenceUID
        assert list(image.ImageType) == ["DERIVED", "SECONDARY", "ADC"]
        referenced = {str(item.ReferencedSOPInstanceUID) for item in image.SourceImageSequence}
        assert len(referenced) == 3 and referenced <= dwi_uids
        assert "DiffusionBValue" not in image
    assert (maps[0].ProtocolName, float(maps[0].MagneticFieldStrength)) == ("dwi_v1", 3.0)


def test_the_map_passes_dciodvfy(noise_free: dict[str, Any]) -> None:
    assert dciodvfy_errors(noise_free["files"][0]) == []


def test_a_series_with_one_b_value_is_unusable_input(tmp_path: Path) -> None:
    only_b0 = b0_images(_dwi(0.0, 3))
    run = _run(tmp_path, only_b0)
    assert run["result"].returncode == ExitCode.BAD_INPUT
    assert "1 distinct b-value(s)" in run["result"].stdout + run["result"].stderr


def test_parameters_name_the_map_series(tmp_path: Path) -> None:
    params = {"series_number": 42, "series_description": "ADC v2"}
    run = _run(tmp_path, _dwi(0.0, 4), params)
    assert run["result"].returncode == 0, run["result"].stderr
    assert (run["maps"][0].SeriesNumber, run["maps"][0].SeriesDescription) == (42, "ADC v2")
