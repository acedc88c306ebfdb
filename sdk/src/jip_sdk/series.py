"""Input series: find them, read their datasets, load them as one 3-D image.

Slices are ordered by their position along the slice normal (the cross product of the
two ImageOrientationPatient direction cosines, PS3.3 C.7.6.2.1.1), never by
InstanceNumber or file name: scanners and PACS number and name files in any order, and
only the geometry says where a slice lies.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from jip_sdk.errors import Invalid

# Two slices closer than this (mm) along the normal are the same position.
_SAME_POSITION_MM = 1e-3
# Slice gaps may differ by this fraction before the series counts as non-uniform.
_SPACING_TOLERANCE = 0.01


class SeriesError(Invalid):
    """An input series cannot be used: unreadable, wrong modality, broken geometry."""


@dataclass(frozen=True)
class InputSeries:
    """One folder ``JIP_INPUT_DIR/<SeriesInstanceUID>/`` and its DICOM files."""

    uid: str
    path: Path

    def files(self) -> list[Path]:
        """The ``*.dcm`` files, sorted by name for a reproducible read order."""
        return sorted(p for p in self.path.glob("*.dcm") if p.is_file())


def iter_series(input_dir: Path) -> list[InputSeries]:
    """Every series folder under the input directory, sorted by UID.

    An empty input is an error rather than a silent success: a workflow that processed
    nothing almost always means the runner staged the wrong folder.
    """
    series = [
        InputSeries(uid=p.name, path=p)
        for p in sorted(input_dir.iterdir())
        if p.is_dir() and any(p.glob("*.dcm"))
    ]
    if not series:
        raise SeriesError(f"no series folders with *.dcm files in {input_dir}")
    return series


def iter_datasets(series: InputSeries, *, stop_before_pixels: bool = False) -> Iterator[Dataset]:
    """Read the series' files one by one (memory stays at one dataset)."""
    files = series.files()
    if not files:
        raise SeriesError(f"series {series.uid}: no *.dcm files in {series.path}")
    for path in files:
        try:
            yield pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
        except (InvalidDicomError, OSError, ValueError) as exc:
            raise SeriesError(f"series {series.uid}: cannot read {path.name}: {exc}") from exc


def read_datasets(series: InputSeries, *, stop_before_pixels: bool = False) -> list[Dataset]:
    """All datasets of a series, in file-name order."""
    return list(iter_datasets(series, stop_before_pixels=stop_before_pixels))


def find_series(input_dir: Path, series_instance_uid: str) -> InputSeries:
    """The input series whose files carry this SeriesInstanceUID.

    The folder name is the runner's promise; the header is the truth, so a folder named
    differently (a copy, a renamed export) is still found.
    """
    candidates = iter_series(input_dir)
    for series in candidates:
        if series.uid == series_instance_uid:
            return series
    for series in candidates:
        first = pydicom.dcmread(series.files()[0], stop_before_pixels=True)
        if first.get("SeriesInstanceUID") == series_instance_uid:
            return series
    raise SeriesError(f"series {series_instance_uid} is not in the input directory {input_dir}")


def modality(datasets: Sequence[Dataset]) -> str:
    """The series' Modality (from its first dataset)."""
    return str(datasets[0].get("Modality", "")) if datasets else ""


def require_modality(
    datasets: Sequence[Dataset], allowed: Sequence[str], *, series_uid: str
) -> str:
    """Fail early, naming the series, when an operator gets a modality it cannot handle."""
    found = modality(datasets)
    if found not in allowed:
        expected = " or ".join(allowed)
        raise SeriesError(
            f"series {series_uid} has Modality {found or '(missing)'}; "
            f"this operator needs {expected}"
        )
    return found


def slice_normal(dataset: Dataset) -> np.ndarray:
    """The unit normal of a slice: row direction x column direction (PS3.3 C.7.6.2.1.1)."""
    iop = dataset.get("ImageOrientationPatient")
    if iop is None or len(iop) != 6:
        raise SeriesError(
            f"instance {dataset.get('SOPInstanceUID', '?')} has no ImageOrientationPatient"
        )
    row = np.array([float(v) for v in iop[:3]])
    col = np.array([float(v) for v in iop[3:]])
    normal = np.cross(row, col)
    return normal / np.linalg.norm(normal)


def sort_slices(datasets: Sequence[Dataset]) -> list[Dataset]:
    """Single-frame slices of one volume, ordered by position along the slice normal."""
    if not datasets:
        raise SeriesError("series has no instances")
    uid = str(datasets[0].get("SeriesInstanceUID", "?"))
    for ds in datasets:
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            raise SeriesError(f"series {uid}: multi-frame images are not supported here")
        if "ImagePositionPatient" not in ds:
            raise SeriesError(
                f"series {uid}: instance {ds.get('SOPInstanceUID', '?')} has no "
                "ImagePositionPatient, so its slices cannot be ordered"
            )
    normal = slice_normal(datasets[0])
    first_iop = [float(v) for v in datasets[0].ImageOrientationPatient]
    for ds in datasets[1:]:
        if not np.allclose([float(v) for v in ds.ImageOrientationPatient], first_iop, atol=1e-4):
            raise SeriesError(f"series {uid}: slices have different ImageOrientationPatient")
    positions = [_position_along(ds, normal) for ds in datasets]
    order = np.argsort(positions, kind="stable")
    ordered = [datasets[i] for i in order]
    sorted_positions = np.asarray(positions)[order]
    if len(ordered) > 1 and np.min(np.diff(sorted_positions)) < _SAME_POSITION_MM:
        raise SeriesError(
            f"series {uid}: two slices share one position (a duplicate or a 4D series)"
        )
    return ordered


def slice_spacing(sorted_datasets: Sequence[Dataset]) -> float:
    """The distance between neighbouring slices; fails on gaps (missing slices)."""
    if len(sorted_datasets) < 2:
        thickness = sorted_datasets[0].get("SliceThickness") if sorted_datasets else None
        return float(thickness) if thickness else 1.0
    normal = slice_normal(sorted_datasets[0])
    positions = np.array([_position_along(ds, normal) for ds in sorted_datasets])
    gaps = np.diff(positions)
    spacing = float(np.median(gaps))
    if np.max(np.abs(gaps - spacing)) > max(_SPACING_TOLERANCE * spacing, _SAME_POSITION_MM):
        uid = sorted_datasets[0].get("SeriesInstanceUID", "?")
        raise SeriesError(
            f"series {uid}: slice spacing is not uniform ({gaps.min():.3f} to "
            f"{gaps.max():.3f} mm); slices are missing or the series mixes acquisitions"
        )
    return spacing


def load_image(datasets: Sequence[Dataset]) -> sitk.Image:
    """A float32 SimpleITK image in modality units (HU for CT), LPS geometry.

    Slice k of the image is ``sort_slices(datasets)[k]``. The modality LUT (rescale slope
    and intercept, PS3.3 C.11.1) is applied per slice because scanners may vary it.
    """
    ordered = sort_slices(datasets)
    first = ordered[0]
    rows, cols = int(first.Rows), int(first.Columns)
    volume = np.empty((len(ordered), rows, cols), dtype=np.float32)
    for k, ds in enumerate(ordered):
        if (int(ds.Rows), int(ds.Columns)) != (rows, cols):
            raise SeriesError(
                f"series {first.get('SeriesInstanceUID', '?')}: slices differ in size"
            )
        slope = float(ds.get("RescaleSlope", 1) or 1)
        intercept = float(ds.get("RescaleIntercept", 0) or 0)
        volume[k] = ds.pixel_array.astype(np.float32) * slope + intercept
    image = sitk.GetImageFromArray(volume)
    row_spacing, col_spacing = (float(v) for v in first.PixelSpacing)
    image.SetSpacing((col_spacing, row_spacing, slice_spacing(ordered)))
    image.SetOrigin(tuple(float(v) for v in first.ImagePositionPatient))
    iop = [float(v) for v in first.ImageOrientationPatient]
    normal = slice_normal(first)
    # ITK's direction matrix has one column per index axis (i: along a row, j: down a
    # column, k: along the normal), flattened row by row.
    axes = np.column_stack([iop[:3], iop[3:], normal])
    image.SetDirection(tuple(float(v) for v in axes.flatten()))
    return image


def _position_along(dataset: Dataset, normal: np.ndarray) -> float:
    return float(np.dot([float(v) for v in dataset.ImagePositionPatient], normal))
