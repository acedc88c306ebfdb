"""Synthetic prostate-like diffusion MR with known ADC, for the harmonisation use case.

The ADC harmonisation study (use case 1 of the JIP paper) compares apparent diffusion
coefficient distributions per region across sites, field strengths and protocol
versions. Testing it end to end needs data whose right answer is known: a phantom of
cylinders with fixed ADC in a body of tissue, imaged by a multi-b DWI series whose
signal follows the mono-exponential model S = S0·exp(−b·ADC), with seeded Rician noise
whose level is the protocol's (a protocol change that doubles the noise is what Levene's
test should see). Each region is also a segment of a DICOM SEG, and a ground-truth ADC
map series (what an ADC fit would give, with the same noise model) lets the federation
tests compute on voxel values without running a fit first.

Headers come from :func:`jip.samples.image_series`, so these series look like the rest
of the synthetic site to C-FIND, QIDO and META.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from jip_sdk.seg import SegAlgorithm, SegmentSpec, build_segmentation
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from jip.samples import PatientInfo, image_series

B_VALUES: tuple[float, ...] = (0.0, 500.0, 1000.0)
ADC_UNITS_PER_MM2_S = 1e7  # the ADC map's stored unit: 1e-7 mm²/s (RescaleSlope 0.1 → µm²/s)
ADC_RESCALE_SLOPE = 0.1  # real-world values in 1e-6 mm²/s (µm²/s), as vendors' ADC maps
_TISSUE = Code("85756007", "SCT", "Tissue")
_ALTERED = Code("49755003", "SCT", "Morphologically Altered Structure")
_SCANNERS = {1.5: ("SIEMENS", "MAGNETOM Aera"), 3.0: ("SIEMENS", "MAGNETOM Skyra")}


@dataclass(frozen=True)
class Region:
    """A cylinder along the slice axis: centre and radius as fractions of the field of
    view, its ADC (mm²/s), its b = 0 signal, and how it is coded in the SEG."""

    label: str
    centre: tuple[float, float]  # (row, column) fraction
    radius: float
    adc: float
    s0: float
    category: Code
    property_type: Code


BODY = Region("Body", (0.5, 0.5), 0.45, 1.4e-3, 2500.0, _TISSUE, _TISSUE)
REGIONS: tuple[Region, ...] = (
    Region(
        "Peripheral zone",
        (0.7, 0.5),
        0.12,
        1.6e-3,
        3000.0,
        _TISSUE,
        Code("279706003", "SCT", "Peripheral zone of prostate"),
    ),
    Region(
        "Transition zone",
        (0.4, 0.55),
        0.14,
        1.1e-3,
        2800.0,
        _TISSUE,
        Code("399384005", "SCT", "Transition zone of prostate"),
    ),
    Region(
        "Cyst",
        (0.35, 0.25),
        0.07,
        2.8e-3,
        4000.0,
        _ALTERED,
        Code("441457006", "SCT", "Cyst"),
    ),
)
# Noise (standard deviation of each Gaussian channel of the Rician signal) per protocol:
# the protocol change halves it.
PROTOCOL_NOISE = {"dwi_v1": 30.0, "dwi_v2": 15.0}


@dataclass(frozen=True)
class Phantom:
    """Per-voxel truth on a grid ``(slices, rows, columns)``: ADC (mm²/s, 0 in air), S0,
    and one boolean mask per region, keyed by its label."""

    adc: np.ndarray
    s0: np.ndarray
    masks: dict[str, np.ndarray]


def phantom(slices: int, rows: int, columns: int) -> Phantom:
    """The phantom on a grid: air, a body of tissue, three regions through every slice."""
    y, x = np.mgrid[:rows, :columns]
    y, x = (y + 0.5) / rows, (x + 0.5) / columns

    def disc(region: Region) -> np.ndarray:
        inside = np.hypot(y - region.centre[0], x - region.centre[1]) <= region.radius
        return np.broadcast_to(inside, (slices, rows, columns)).copy()

    adc = np.zeros((slices, rows, columns))
    s0 = np.zeros((slices, rows, columns))
    masks = {}
    for region in (BODY, *REGIONS):
        mask = disc(region)
        adc[mask], s0[mask] = region.adc, region.s0
        if region is not BODY:
            masks[region.label] = mask
    return Phantom(adc, s0, masks)


def rician(signal: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """The magnitude of a signal with Gaussian noise of ``sigma`` on both channels."""
    if sigma <= 0:
        return signal.astype(float)
    real = signal + rng.normal(0.0, sigma, signal.shape)
    imaginary = rng.normal(0.0, sigma, signal.shape)
    return np.hypot(real, imaginary)


def _mr_header(
    patient: PatientInfo,
    scan: tuple[float, str],
    grid: tuple[int, int, int],
    study: tuple[str | None, int, str],
) -> list[Dataset]:
    """The MR headers of one series: ``scan`` (field strength, protocol), ``grid``
    (slices, rows, columns), ``study`` (StudyInstanceUID, SeriesNumber, description)."""
    (field_strength, protocol), (slices, rows, columns) = scan, grid
    study_instance_uid, series_number, series_description = study
    datasets = image_series(
        patient=patient,
        modality="MR",
        study_instance_uid=study_instance_uid,
        series_number=series_number,
        slices=slices,
        rows=rows,
        columns=columns,
        body_part="PROSTATE",
        manufacturer=_SCANNERS.get(field_strength, _SCANNERS[3.0]),
        slice_thickness=3.0,
        series_description=series_description,
    )
    for ds in datasets:
        ds.MagneticFieldStrength = field_strength
        ds.ProtocolName = protocol
        ds.MRAcquisitionType = "2D"
        ds.PatientPosition = "HFS"
        ds.ScanOptions = ""
        ds.EchoTrainLength = 1
        ds.BitsStored, ds.HighBit = 16, 15
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
    return datasets


def _set_pixels(ds: Dataset, values: np.ndarray) -> None:
    ds.PixelData = np.clip(np.rint(values), 0, 65535).astype(np.uint16).tobytes()


def dwi_series(
    *,
    patient: PatientInfo,
    field_strength: float = 3.0,
    protocol: str = "dwi_v1",
    b_values: Sequence[float] = B_VALUES,
    noise: float | None = None,
    slices: int = 4,
    rows: int = 48,
    columns: int = 48,
    seed: int = 0,
    study_instance_uid: str | None = None,
    series_number: int = 5,
) -> list[Dataset]:
    """A multi-b DWI series: one instance per (b-value, slice), DiffusionBValue on each,
    positions repeated per b-value. ``noise`` overrides the protocol's (0: noise-free)."""
    truth = phantom(slices, rows, columns)
    sigma = PROTOCOL_NOISE.get(protocol, 20.0) if noise is None else noise
    rng = np.random.default_rng(seed)
    description = f"ep2d_diff {protocol}"
    template = _mr_header(
        patient,
        (field_strength, protocol),
        (slices, rows, columns),
        (study_instance_uid, series_number, description),
    )
    datasets = []
    for b_index, b in enumerate(b_values):
        signal = rician(truth.s0 * np.exp(-b * truth.adc), sigma, rng)
        for k, base in enumerate(template):
            ds = copy.deepcopy(base)
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.InstanceNumber = b_index * slices + k + 1
            ds.AcquisitionNumber = b_index + 1
            ds.ImageType = ["ORIGINAL", "PRIMARY", "DIFFUSION", "NONE"]
            ds.ScanningSequence, ds.SequenceVariant = "EP", ["SK", "SP"]
            ds.SequenceName = f"*ep_b{b:g}t"
            ds.EchoTime, ds.RepetitionTime = 80, 4000
            ds.DiffusionBValue = float(b)
            ds.WindowCenter, ds.WindowWidth = 1500, 3000
            _set_pixels(ds, signal[k])
            datasets.append(ds)
    return datasets


def adc_map_series(
    *,
    patient: PatientInfo,
    field_strength: float = 3.0,
    protocol: str = "dwi_v1",
    noise: float = 50.0,
    slices: int = 4,
    rows: int = 48,
    columns: int = 48,
    seed: int = 0,
    study_instance_uid: str | None = None,
    series_number: int = 901,
) -> list[Dataset]:
    """A ground-truth ADC map (derived MR) of the phantom: stored in 1e-7 mm²/s with
    RescaleSlope 0.1, so real-world values are µm²/s; ``noise`` (µm²/s, Gaussian, seeded)
    is scaled by the protocol's noise relative to ``dwi_v1``."""
    truth = phantom(slices, rows, columns)
    rng = np.random.default_rng(seed)
    relative = PROTOCOL_NOISE.get(protocol, 20.0) / PROTOCOL_NOISE["dwi_v1"]
    microns = truth.adc * 1e6 + (truth.adc > 0) * rng.normal(0.0, noise * relative, truth.adc.shape)
    stored = np.maximum(microns, 0.0) / ADC_RESCALE_SLOPE
    datasets = _mr_header(
        patient,
        (field_strength, protocol),
        (slices, rows, columns),
        (study_instance_uid, series_number, f"ADC {protocol}"),
    )
    for k, ds in enumerate(datasets):
        ds.ImageType = ["DERIVED", "SECONDARY", "ADC"]
        ds.RescaleSlope = ADC_RESCALE_SLOPE
        ds.WindowCenter, ds.WindowWidth = 1500, 3000
        _set_pixels(ds, stored[k])
    return datasets


def region_segmentation(
    images: Sequence[Dataset], *, regions: Sequence[Region] = REGIONS
) -> hd.seg.Segmentation:
    """A BINARY SEG over ``images`` (one image per position; of a DWI series pass its
    b = 0 images), one segment per region, in the order given."""
    first = images[0]
    truth = phantom(len(images), int(first.Rows), int(first.Columns))
    specs = [
        SegmentSpec(
            label=region.label,
            category=region.category,
            property_type=region.property_type,
            mask=truth.masks[region.label],
        )
        for region in regions
    ]
    return build_segmentation(
        images,
        specs,
        algorithm=SegAlgorithm(name="JIP ADC phantom", version="1.0", automatic=False),
        series_description="Prostate zones (phantom truth)",
    )


def b0_images(datasets: Sequence[Dataset]) -> list[Dataset]:
    """The b = 0 images of a DWI series (one per position), for a SEG over it."""
    return [ds for ds in datasets if float(ds.get("DiffusionBValue", -1)) == 0.0]
