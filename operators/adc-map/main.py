"""adc-map: the apparent diffusion coefficient of every voxel of a multi-b DWI series.

The mono-exponential model S(b) = S0·exp(−b·ADC) is fitted per voxel by weighted
log-linear least squares: ln S = ln S0 − b·ADC with weights S², since the variance of
ln S is about σ²/S² (a low signal, at high b or in the noise floor, counts less). The
fit is a 2×2 normal-equation solve over all voxels at once (NumPy, no loop over voxels).
Voxels whose b = 0 signal is below ``min_signal_fraction`` of the series' 99th
percentile are background and get ADC 0.

Output, per input series: ``JIP_OUTPUT_DIR/<source SeriesInstanceUID>/<SOP>.dcm``, one
derived MR image per slice position on the source geometry (the b-lowest images' header,
same frame of reference), pixel values in 10⁻⁶ mm²/s (µm²/s) with RescaleSlope 1,
each image naming its source images (SourceImageSequence, PS3.3 C.7.6.1.1.4).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from jip_sdk import (
    InputSeries,
    OperatorContext,
    SeriesError,
    iter_series,
    read_datasets,
    report_progress,
    require_modality,
    run_operator,
    sort_slices,
)
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

logger = logging.getLogger("adc-map-operator")

MICRONS_PER_MM2 = 1e6  # stored unit: 1e-6 mm²/s
MAX_STORED = 65535


def b_value(ds: Dataset) -> float:
    """The instance's Diffusion b-value (0018,9087), in s/mm²."""
    value = ds.get("DiffusionBValue")
    if value is None:
        raise SeriesError(
            f"instance {ds.get('SOPInstanceUID', '?')} has no DiffusionBValue (0018,9087); "
            "adc-map needs it on every image of a DWI series"
        )
    return float(value)


def by_b_value(datasets: Sequence[Dataset]) -> tuple[np.ndarray, list[list[Dataset]]]:
    """The distinct b-values (ascending) and, per b-value, its slices in position order;
    every b-value must cover the same positions."""
    groups: dict[float, list[Dataset]] = {}
    for ds in datasets:
        groups.setdefault(b_value(ds), []).append(ds)
    if len(groups) < 2:
        raise SeriesError(
            f"series {datasets[0].SeriesInstanceUID}: {len(groups)} distinct b-value(s); "
            "an ADC fit needs two or more"
        )
    b_values = np.array(sorted(groups))
    volumes = [sort_slices(groups[b]) for b in b_values]
    reference = [tuple(float(v) for v in ds.ImagePositionPatient) for ds in volumes[0]]
    for b, volume in zip(b_values, volumes, strict=True):
        positions = [tuple(float(v) for v in ds.ImagePositionPatient) for ds in volume]
        if len(positions) != len(reference) or not np.allclose(positions, reference, atol=1e-3):
            raise SeriesError(
                f"series {datasets[0].SeriesInstanceUID}: b = {b:g} covers other slice "
                f"positions than b = {b_values[0]:g}; one volume per b-value is needed"
            )
    return b_values, volumes


def signal(volumes: Sequence[Sequence[Dataset]]) -> np.ndarray:
    """Real-world signal ``(b, slices, rows, columns)``, modality LUT applied."""
    return np.stack(
        [
            np.stack(
                [
                    ds.pixel_array.astype(np.float64) * float(ds.get("RescaleSlope", 1) or 1)
                    + float(ds.get("RescaleIntercept", 0) or 0)
                    for ds in volume
                ]
            )
            for volume in volumes
        ]
    )


def fit_adc(b_values: np.ndarray, s: np.ndarray, min_signal_fraction: float) -> np.ndarray:
    """ADC (mm²/s) per voxel by weighted log-linear least squares; 0 in the background.

    ``s`` is ``(b, ...)``; weights are S², as var(ln S) ≈ σ²/S²."""
    b = b_values.reshape((-1,) + (1,) * (s.ndim - 1))
    floor = np.finfo(np.float64).tiny
    y = np.log(np.maximum(s, floor))
    w = np.square(np.maximum(s, 0.0))
    sw, swb, swbb = w.sum(0), (w * b).sum(0), (w * b * b).sum(0)
    swy, swby = (w * y).sum(0), (w * b * y).sum(0)
    det = sw * swbb - swb * swb
    low_b = s[int(np.argmin(b_values))]
    threshold = min_signal_fraction * float(np.percentile(low_b, 99))
    valid = (low_b > threshold) & (det > 0)
    adc = np.zeros(s.shape[1:])
    slope = (sw * swby - swb * swy)[valid] / det[valid]
    adc[valid] = -slope
    return np.clip(adc, 0.0, None)


def adc_image(
    template: Dataset,
    sources: Sequence[Dataset],
    adc_mm2_s: np.ndarray,
    *,
    series_uid: str,
    params: Mapping[str, Any],
) -> Dataset:
    """One derived MR slice of the ADC map, on ``template``'s geometry."""
    ds = copy.deepcopy(template)
    for keyword in (
        "DiffusionBValue",
        "PixelData",
        "SmallestImagePixelValue",
        "LargestImagePixelValue",
        "ReferencedImageSequence",
    ):
        if keyword in ds:
            delattr(ds, keyword)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta = copy.deepcopy(template.file_meta)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = int(params["series_number"])
    ds.SeriesDescription = str(params["series_description"])
    ds.ImageType = ["DERIVED", "SECONDARY", "ADC"]
    ds.DerivationDescription = (
        f"ADC, mono-exponential weighted log-linear fit over b = "
        f"{', '.join(f'{float(s.DiffusionBValue):g}' for s in sources)} s/mm2; unit 1e-6 mm2/s"
    )
    ds.SourceImageSequence = [_reference(s) for s in sources]
    stored = np.clip(np.rint(adc_mm2_s * MICRONS_PER_MM2), 0, MAX_STORED).astype(np.uint16)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.RescaleSlope, ds.RescaleIntercept = 1, 0
    ds.WindowCenter, ds.WindowWidth = 1500, 3000
    ds.PixelData = stored.tobytes()
    ds["PixelData"].VR = "OW"  # 16-bit pixels (PS3.5 8.2); a copied header leaves it open
    return ds


def _reference(source: Dataset) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = source.SOPClassUID
    item.ReferencedSOPInstanceUID = source.SOPInstanceUID
    return item


def process_series(context: OperatorContext, series: InputSeries) -> Path:
    """Fit and write the ADC map of one DWI series; returns its output folder."""
    datasets = read_datasets(series)
    require_modality(datasets, ["MR"], series_uid=series.uid)
    b_values, volumes = by_b_value(datasets)
    adc = fit_adc(b_values, signal(volumes), float(context.params["min_signal_fraction"]))
    out = context.output_dir_for(series.uid)
    series_uid = generate_uid()
    for k, template in enumerate(volumes[0]):
        sources = [volume[k] for volume in volumes]
        image = adc_image(template, sources, adc[k], series_uid=series_uid, params=context.params)
        image.save_as(out / f"{image.SOPInstanceUID}.dcm", enforce_file_format=True)
    logger.info(
        "series %s: ADC map of %d slices from b = %s",
        series.uid,
        len(volumes[0]),
        ", ".join(f"{b:g}" for b in b_values),
    )
    return out


def process(context: OperatorContext) -> None:
    """An ADC map for every series in the input."""
    found = iter_series(context.input_dir)
    for index, series in enumerate(found):
        report_progress(index / len(found), series=series.uid, message="fitting ADC")
        process_series(context, series)


if __name__ == "__main__":
    run_operator(process, schema_path=Path(__file__).with_name("params.schema.json"))
