"""A small synthetic abdominal CT with known organ volumes, written as real DICOM.

Operator tests, end-to-end tests and the demo need CT data that is small, free of
patient data, and whose right answer is known. The phantom is an elliptic body in air
with a subcutaneous fat layer, soft tissue, a liver on the patient's right, a spleen on
the left posterior side, two contrast-enhanced kidneys and a vertebra. Geometry is in
millimetres in patient coordinates (LPS: +x patient's left, +y posterior, +z head), so
the organs keep their size when the voxel grid changes. The headers come from pydicom's
``CT_small.dcm`` (a real GE CT header, private tags included, which de-identification
must remove) with new UIDs and consistent geometry.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from jip_sdk.seg import LEFT, RIGHT, SegAlgorithm, SegmentSpec, build_segmentation
from jip_sdk.series import InputSeries, read_datasets

AIR_HU = -1000
FAT_HU = -100
SOFT_TISSUE_HU = 20
_RESCALE_INTERCEPT = -1024


@dataclass(frozen=True)
class Ellipsoid:
    """An organ: centre and semi-axes in mm (LPS), and its attenuation in HU."""

    name: str
    center_mm: tuple[float, float, float]
    semi_axes_mm: tuple[float, float, float]
    hu: int


# Body cross-section semi-axes (x, y) in mm and the subcutaneous fat thickness.
BODY_SEMI_AXES_MM = (165.0, 125.0)
FAT_LAYER_MM = 12.0
VERTEBRA = Ellipsoid("vertebra", (0.0, 80.0, 0.0), (20.0, 20.0, 10_000.0), 700)
ORGANS: tuple[Ellipsoid, ...] = (
    Ellipsoid("liver", (-70.0, -15.0, 25.0), (65.0, 55.0, 55.0), 60),
    Ellipsoid("spleen", (85.0, 40.0, 40.0), (28.0, 35.0, 45.0), 50),
    Ellipsoid("right_kidney", (-60.0, 65.0, -40.0), (22.0, 22.0, 45.0), 150),
    Ellipsoid("left_kidney", (60.0, 65.0, -40.0), (22.0, 22.0, 45.0), 150),
)


@dataclass(frozen=True)
class AbdomenPhantom:
    """Voxels ``hu[z, y, x]`` and the exact mask of every structure."""

    hu: np.ndarray
    masks: Mapping[str, np.ndarray]
    spacing_mm: tuple[float, float, float]  # x (column), y (row), z (slice)
    origin_mm: tuple[float, float, float]  # centre of voxel [0, 0, 0], LPS

    def volume_ml(self, name: str) -> float:
        """The true volume of a structure in millilitres (voxel count x voxel volume)."""
        voxel_mm3 = self.spacing_mm[0] * self.spacing_mm[1] * self.spacing_mm[2]
        return float(np.count_nonzero(self.masks[name])) * voxel_mm3 / 1000.0


@dataclass(frozen=True)
class PhantomSeries:
    """Where a written phantom series lies and the UIDs it got."""

    series: InputSeries
    study_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str


def build_abdomen_phantom(
    *,
    shape: tuple[int, int, int] = (40, 64, 64),
    spacing_mm: tuple[float, float, float] = (6.0, 6.0, 5.0),
    noise_hu: float = 8.0,
    seed: int = 0,
) -> AbdomenPhantom:
    """Build the phantom on a ``shape`` = (slices, rows, columns) grid centred at 0.

    The default (64 x 64 x 40 at 6 x 6 x 5 mm) covers the whole body and every organ and
    is small enough for tests. Gaussian noise (fixed seed) makes thresholds meet noise
    the way they do on real scans; the masks are noise-free truth.
    """
    nz, ny, nx = shape
    sx, sy, sz = spacing_mm
    origin = (-(nx - 1) / 2 * sx, -(ny - 1) / 2 * sy, -(nz - 1) / 2 * sz)
    if nx * sx < 2 * BODY_SEMI_AXES_MM[0] or ny * sy < 2 * BODY_SEMI_AXES_MM[1]:
        raise ValueError("the grid is smaller than the body; enlarge shape or spacing")
    z, y, x = np.meshgrid(
        origin[2] + sz * np.arange(nz),
        origin[1] + sy * np.arange(ny),
        origin[0] + sx * np.arange(nx),
        indexing="ij",
    )
    a, b = BODY_SEMI_AXES_MM
    body = (x / a) ** 2 + (y / b) ** 2 <= 1.0
    inner = (x / (a - FAT_LAYER_MM)) ** 2 + (y / (b - FAT_LAYER_MM)) ** 2 <= 1.0
    hu = np.full(shape, AIR_HU, dtype=np.float32)
    hu[body] = FAT_HU
    hu[inner] = SOFT_TISSUE_HU
    masks: dict[str, np.ndarray] = {"body": body}
    for structure in (VERTEBRA, *ORGANS):
        mask = _ellipsoid(structure, x, y, z) & inner
        for other in masks.values():
            if other is not body and np.any(mask & other):
                raise AssertionError(f"phantom structures overlap at {structure.name}")
        hu[mask] = structure.hu
        masks[structure.name] = mask
    rng = np.random.default_rng(seed)
    hu += rng.normal(0.0, noise_hu, size=shape).astype(np.float32)
    hu = np.clip(np.rint(hu), _RESCALE_INTERCEPT, 3071).astype(np.int16)
    return AbdomenPhantom(hu=hu, masks=masks, spacing_mm=spacing_mm, origin_mm=origin)


def write_ct_series(
    phantom: AbdomenPhantom,
    input_dir: Path,
    *,
    patient_id: str = "JIP-PHANTOM-001",
    patient_name: str = "Phantom^Abdomen",
    study_instance_uid: str | None = None,
    study_date: str = "20240315",
    series_number: int = 2,
    series_description: str = "ABDOMEN PORTAL VENOUS 5mm (synthetic)",
) -> PhantomSeries:
    """Write one single-frame CT Image per slice to ``input_dir/<SeriesInstanceUID>/``."""
    template_path = get_testdata_file("CT_small.dcm")
    if not isinstance(template_path, str):
        raise FileNotFoundError("pydicom's CT_small.dcm test file is missing")
    template = pydicom.dcmread(template_path)
    # Laterality is empty in the template, which PS3.3 C.7.3.1 forbids for an abdomen.
    for keyword in ("PixelPaddingValue", "DataSetTrailingPadding", "PixelData", "Laterality"):
        if keyword in template:
            delattr(template, keyword)
    study_uid = study_instance_uid or generate_uid()
    series_uid = generate_uid()
    frame_uid = generate_uid()
    folder = input_dir / series_uid
    folder.mkdir(parents=True, exist_ok=True)
    nz, ny, nx = phantom.hu.shape
    sz = phantom.spacing_mm[2]
    header = _series_header(template, phantom, nx, ny)
    for k in range(nz):
        ds = copy.deepcopy(header)
        _set_identity(ds, patient_id, patient_name, study_date)
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.SeriesNumber = series_number
        ds.SeriesDescription = series_description
        ds.SOPInstanceUID = generate_uid()
        ds.InstanceNumber = k + 1
        position = (phantom.origin_mm[0], phantom.origin_mm[1], phantom.origin_mm[2] + k * sz)
        ds.ImagePositionPatient = [_ds(v) for v in position]
        ds.SliceLocation = _ds(position[2])
        stored = phantom.hu[k].astype(np.int32) - _RESCALE_INTERCEPT
        ds.add_new("PixelData", "OW", stored.astype("<i2").tobytes())
        ds.file_meta = _file_meta(ds)
        ds.save_as(folder / f"{k + 1:04d}.dcm", enforce_file_format=True)
    return PhantomSeries(
        series=InputSeries(uid=series_uid, path=folder),
        study_instance_uid=study_uid,
        series_instance_uid=series_uid,
        frame_of_reference_uid=frame_uid,
    )


@dataclass(frozen=True)
class TruthSegment:
    """How the truth SEG names and codes one phantom organ."""

    label: str
    property_type: Code
    laterality: Code | None
    color_rgb: tuple[int, int, int]


TRUTH_SEGMENTS: Mapping[str, TruthSegment] = {
    "liver": TruthSegment("Liver", codes.SCT.Liver, None, (221, 130, 101)),
    "spleen": TruthSegment("Spleen", codes.SCT.Spleen, None, (157, 108, 162)),
    "right_kidney": TruthSegment("Right kidney", codes.SCT.Kidney, RIGHT, (185, 102, 83)),
    "left_kidney": TruthSegment("Left kidney", codes.SCT.Kidney, LEFT, (185, 102, 83)),
}


def write_truth_seg(
    phantom: AbdomenPhantom,
    source: InputSeries,
    output_dir: Path,
    *,
    organs: Sequence[str] = ("liver", "spleen", "right_kidney", "left_kidney"),
) -> Path:
    """Write the phantom's true organ masks as a SEG into ``output_dir/<SEG series UID>/``.

    Radiomics and viewer tests need a SEG whose content is known exactly; this one is
    made from the phantom's masks rather than by an algorithm under test.
    """
    datasets = read_datasets(source)
    specs = []
    for organ in organs:
        truth = TRUTH_SEGMENTS[organ]
        specs.append(
            SegmentSpec(
                label=truth.label,
                category=codes.SCT.AnatomicalStructure,
                property_type=truth.property_type,
                mask=phantom.masks[organ],
                laterality=truth.laterality,
                color_rgb=truth.color_rgb,
            )
        )
    seg = build_segmentation(
        datasets,
        specs,
        algorithm=SegAlgorithm(
            name="JIP phantom truth", version="1", family=codes.cid7162.ManualProcessing
        ),
        series_description="Phantom ground truth",
    )
    folder = output_dir / str(seg.SeriesInstanceUID)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "seg.dcm"
    seg.save_as(path)
    return path


def _ellipsoid(e: Ellipsoid, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    (cx, cy, cz), (a, b, c) = e.center_mm, e.semi_axes_mm
    return ((x - cx) / a) ** 2 + ((y - cy) / b) ** 2 + ((z - cz) / c) ** 2 <= 1.0


def _series_header(template: Dataset, phantom: AbdomenPhantom, nx: int, ny: int) -> Dataset:
    ds = copy.deepcopy(template)
    sx, sy, sz = phantom.spacing_mm
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.BodyPartExamined = "ABDOMEN"
    ds.PatientPosition = "HFS"
    ds.ImageComments = "JIP synthetic abdominal phantom"
    ds.AcquisitionNumber = 1
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [_ds(sy), _ds(sx)]  # row spacing, column spacing (PS3.3 10.7.1.3)
    ds.SliceThickness = _ds(sz)
    ds.SpacingBetweenSlices = _ds(sz)
    ds.ReconstructionDiameter = _ds(max(nx * sx, ny * sy))
    ds.Rows, ds.Columns = ny, nx
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = str(_RESCALE_INTERCEPT)
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.WindowCenter, ds.WindowWidth = "40", "400"
    return ds


def _set_identity(ds: Dataset, patient_id: str, patient_name: str, study_date: str) -> None:
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "F"
    ds.PatientAge = "054Y"
    ds.PatientWeight = "68"
    ds.PatientSize = "1.68"
    ds.ReferringPhysicianName = "Referrer^Rita"
    ds.AccessionNumber = "ACC-0001"
    ds.StudyID = "1"
    ds.StudyDescription = "CT ABDOMEN WITH CONTRAST"
    for prefix in ("Study", "Series", "Acquisition", "Content", "InstanceCreation"):
        setattr(ds, f"{prefix}Date", study_date)
    ds.StudyTime, ds.SeriesTime, ds.AcquisitionTime = "101500", "101700", "101712"
    ds.ContentTime, ds.InstanceCreationTime = "101730", "101730"


def _file_meta(ds: Dataset) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return meta


def _ds(value: float) -> str:
    """A DS string (at most 16 characters, PS3.5 6.2)."""
    return f"{value:.6g}"
