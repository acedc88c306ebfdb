"""`jip_sdk.roi.segment_values` against NumPy on the ADC phantom's known masks: frames
matched by source-image reference and, for a SEG drawn on another series of the same
grid, by position; rescale applied; what does not fit is refused, naming the cause."""

from __future__ import annotations

import random
from io import BytesIO

import numpy as np
import pydicom
import pytest
from jip_sdk import SeriesError, segment_values, sort_slices
from pydicom.dataset import Dataset

from jip.samples import random_patient
from jip.samples_dwi import (
    REGIONS,
    adc_map_series,
    b0_images,
    dwi_series,
    phantom,
    region_segmentation,
)

SLICES, ROWS, COLUMNS = 3, 24, 24


def _reread(ds: Dataset) -> Dataset:
    """As a reader gets it: encoded and parsed again."""
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return pydicom.dcmread(BytesIO(buffer.getvalue()))


@pytest.fixture(scope="module")
def series() -> dict[str, list[Dataset]]:
    patient = random_patient(random.Random(3), 3)
    study = pydicom.uid.generate_uid()
    grid = {"slices": SLICES, "rows": ROWS, "columns": COLUMNS}
    adc = adc_map_series(patient=patient, study_instance_uid=study, seed=4, **grid)
    dwi = dwi_series(patient=patient, study_instance_uid=study, seed=5, **grid)
    for ds in adc:  # the ADC map of that DWI: same frame of reference and positions
        ds.FrameOfReferenceUID = dwi[0].FrameOfReferenceUID
    return {"adc": [_reread(ds) for ds in adc], "dwi": [_reread(ds) for ds in dwi]}


def _expected(images: list[Dataset]) -> dict[str, np.ndarray]:
    ordered = sort_slices(images)
    volume = np.stack(
        [ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in ordered]
    )
    truth = phantom(SLICES, ROWS, COLUMNS)
    return {label: volume[mask] for label, mask in truth.masks.items()}


def test_values_inside_each_segment_are_the_rescaled_voxels(
    series: dict[str, list[Dataset]],
) -> None:
    seg = _reread(region_segmentation(series["adc"]))
    found = segment_values(series["adc"], seg)
    expected = _expected(series["adc"])
    assert list(found) == [r.label for r in REGIONS]
    for label, values in expected.items():
        assert found[label].size == values.size > 0
        np.testing.assert_allclose(np.sort(found[label]), np.sort(values), rtol=0, atol=1e-9)
    # RescaleSlope 0.1: the values are µm²/s, around each region's ADC × 1e6
    assert abs(float(np.mean(found["Cyst"])) - 2800.0) < 50.0


def test_a_seg_of_the_dwi_series_fits_its_adc_map_by_position(
    series: dict[str, list[Dataset]],
) -> None:
    seg = _reread(region_segmentation(b0_images(series["dwi"])))
    found = segment_values(series["adc"], seg)
    for label, values in _expected(series["adc"]).items():
        np.testing.assert_allclose(np.sort(found[label]), np.sort(values), rtol=0, atol=1e-9)


def test_frames_referencing_dwi_images_take_those_images(
    series: dict[str, list[Dataset]],
) -> None:
    b0 = b0_images(series["dwi"])
    seg = _reread(region_segmentation(b0))
    found = segment_values(series["dwi"], seg)
    for label, values in _expected(b0).items():
        np.testing.assert_allclose(np.sort(found[label]), np.sort(values), rtol=0, atol=1e-9)


def test_several_images_at_a_frame_position_are_refused(
    series: dict[str, list[Dataset]],
) -> None:
    seg = _reread(region_segmentation(series["adc"]))
    with pytest.raises(SeriesError, match="3 images at frame position"):
        segment_values(series["dwi"], seg)


def test_a_seg_in_another_frame_of_reference_is_refused(
    series: dict[str, list[Dataset]],
) -> None:
    seg = _reread(region_segmentation(series["adc"]))
    seg.FrameOfReferenceUID = pydicom.uid.generate_uid()
    with pytest.raises(SeriesError, match="shares its frame of reference"):
        segment_values([_reread(ds) for ds in series["adc"]], _with_new_sources(seg))


def _with_new_sources(seg: Dataset) -> Dataset:
    """The SEG as if drawn on another series: its source references name other images."""
    for item in seg.PerFrameFunctionalGroupsSequence:
        for derivation in item.DerivationImageSequence:
            for source in derivation.SourceImageSequence:
                source.ReferencedSOPInstanceUID = pydicom.uid.generate_uid()
    return seg


def test_an_image_that_is_not_a_seg_is_refused(series: dict[str, list[Dataset]]) -> None:
    with pytest.raises(SeriesError, match="is not a SEG"):
        segment_values(series["adc"], series["adc"][0])
