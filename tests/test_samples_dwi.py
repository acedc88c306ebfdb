"""The synthetic DWI phantom of known ADC (jip.samples_dwi): every object it makes passes
dciodvfy, the signal follows S = S0·exp(−b·ADC), and the protocols differ in noise."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from jip_sdk import sort_slices
from jip_sdk.testing import dciodvfy_errors
from pydicom.dataset import Dataset

from jip.samples import random_patient, write_datasets
from jip.samples_dwi import (
    ADC_RESCALE_SLOPE,
    REGIONS,
    adc_map_series,
    b0_images,
    dwi_series,
    phantom,
    region_segmentation,
)

GRID = {"slices": 3, "rows": 32, "columns": 32}


def _volume(datasets: list[Dataset]) -> np.ndarray:
    return np.stack([ds.pixel_array.astype(float) for ds in sort_slices(datasets)])


@pytest.fixture(scope="module")
def patient_dwi() -> list[Dataset]:
    return dwi_series(patient=random_patient(random.Random(1), 1), noise=0.0, **GRID)


def test_every_object_passes_dciodvfy(patient_dwi: list[Dataset], tmp_path: Path) -> None:
    adc = adc_map_series(patient=random_patient(random.Random(2), 2), **GRID)
    first_of_each_b = [ds for ds in patient_dwi if ds.InstanceNumber % GRID["slices"] == 1]
    paths = write_datasets([*first_of_each_b, adc[0]], tmp_path)
    for seg in (region_segmentation(b0_images(patient_dwi)), region_segmentation(adc)):
        path = tmp_path / f"{seg.SOPInstanceUID}.dcm"
        seg.save_as(path)
        paths.append(path)
    assert len(paths) == 6
    for path in paths:
        assert dciodvfy_errors(path) == [], path.name


def test_a_dwi_series_has_one_instance_per_b_value_and_slice(patient_dwi: list[Dataset]) -> None:
    assert len(patient_dwi) == 3 * GRID["slices"]
    assert sorted({float(ds.DiffusionBValue) for ds in patient_dwi}) == [0.0, 500.0, 1000.0]
    assert {str(ds.ProtocolName) for ds in patient_dwi} == {"dwi_v1"}
    assert {float(ds.MagneticFieldStrength) for ds in patient_dwi} == {3.0}
    assert len(b0_images(patient_dwi)) == GRID["slices"]


def test_noise_free_signal_follows_the_mono_exponential_model(
    patient_dwi: list[Dataset],
) -> None:
    by_b = {
        b: _volume([ds for ds in patient_dwi if float(ds.DiffusionBValue) == b])
        for b in (0.0, 1000.0)
    }
    masks = phantom(**GRID).masks
    for region in REGIONS:
        s0, s1000 = by_b[0.0][masks[region.label]], by_b[1000.0][masks[region.label]]
        np.testing.assert_allclose(np.log(s0 / s1000) / 1000.0, region.adc, rtol=0.01)


def test_the_protocol_change_halves_the_noise() -> None:
    patient = random_patient(random.Random(3), 3)
    masks = phantom(**GRID).masks
    spread = {}
    for protocol in ("dwi_v1", "dwi_v2"):
        adc = adc_map_series(patient=patient, protocol=protocol, seed=5, **GRID)
        values = _volume(adc)[masks["Transition zone"]] * ADC_RESCALE_SLOPE
        assert abs(float(values.mean()) - 1100.0) < 30.0
        spread[protocol] = float(values.std())
    assert spread["dwi_v2"] == pytest.approx(spread["dwi_v1"] / 2, rel=0.05)
