"""Voxel values inside each segment of a SEG: what ROI statistics are computed on.

One function serves the roi-stats operator and the platform's federated jobs alike, so a
number computed at a site means the same as one computed by a workflow. Values are the
image's real-world values (the modality LUT, PS3.3 C.11.1: stored × RescaleSlope +
RescaleIntercept, per slice). The SEG need not reference the image series itself: an
ADC map has the geometry of the DWI series its SEG was drawn on, so a frame is matched
to a slice by its source-image reference when that names one of the images (PS3.3
C.7.6.1.1.4, DerivationImageSequence), else by its position (PlanePositionSequence)
in the same frame of reference and orientation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

from jip_sdk.series import SeriesError

# Two positions closer than this (mm) are the same slice.
_SAME_POSITION_MM = 0.01


@dataclass(frozen=True)
class _Frame:
    segment: int
    sources: tuple[str, ...]
    position: tuple[float, ...] | None


def segment_values(
    image_datasets: Sequence[Dataset], seg_dataset: Dataset
) -> dict[str, np.ndarray]:
    """Per SegmentLabel, the real-world values (float64) of the image voxels inside the
    segment, in frame order; a segment without frames gives an empty array.

    :class:`~jip_sdk.series.SeriesError` when a frame fits no image (another frame of
    reference, orientation, size or spacing), fits several (a multi-b series matched by
    position), or two segments share a label.
    """
    if str(seg_dataset.get("Modality", "")) != "SEG":
        raise SeriesError(f"{seg_dataset.get('SOPInstanceUID', '?')} is not a SEG")
    labels = _labels(seg_dataset)
    frames = _frames(seg_dataset)
    masks = _masks(seg_dataset, len(frames))
    images = _Images(image_datasets, seg_dataset)
    parts: dict[str, list[np.ndarray]] = {label: [] for label in labels.values()}
    for frame, mask in zip(frames, masks, strict=True):
        if frame.segment not in labels:
            raise SeriesError(f"SEG frame names segment {frame.segment}, which it does not define")
        image = images.match(frame)
        values = images.values(image)
        if values.shape != mask.shape:
            raise SeriesError(
                f"SEG frames are {mask.shape}, image {image.SOPInstanceUID} is {values.shape}"
            )
        parts[labels[frame.segment]].append(values[mask])
    return {
        label: np.concatenate(found) if found else np.empty(0, dtype=np.float64)
        for label, found in parts.items()
    }


def _labels(seg: Dataset) -> dict[int, str]:
    labels: dict[int, str] = {}
    for item in seg.get("SegmentSequence") or []:
        label = str(item.get("SegmentLabel", "")).strip() or f"segment-{item.SegmentNumber}"
        if label in labels.values():
            raise SeriesError(f"SEG {seg.SOPInstanceUID}: two segments are labelled {label!r}")
        labels[int(item.SegmentNumber)] = label
    if not labels:
        raise SeriesError(f"SEG {seg.SOPInstanceUID} defines no segment")
    return labels


def _frames(seg: Dataset) -> list[_Frame]:
    frames = []
    # A SEG of one segment may identify it once for all frames (PS3.3 C.7.6.16.1).
    shared = [
        item
        for group in seg.get("SharedFunctionalGroupsSequence") or []
        for item in group.get("SegmentIdentificationSequence") or []
    ]
    for item in seg.get("PerFrameFunctionalGroupsSequence") or []:
        identification = item.get("SegmentIdentificationSequence") or shared
        if not identification:
            raise SeriesError(f"SEG {seg.SOPInstanceUID}: a frame names no segment")
        sources = tuple(
            str(source.ReferencedSOPInstanceUID)
            for derivation in item.get("DerivationImageSequence") or []
            for source in derivation.get("SourceImageSequence") or []
        )
        planes = item.get("PlanePositionSequence") or []
        position = (
            tuple(float(v) for v in planes[0].ImagePositionPatient)
            if planes and "ImagePositionPatient" in planes[0]
            else None
        )
        frames.append(_Frame(int(identification[0].ReferencedSegmentNumber), sources, position))
    return frames


def _masks(seg: Dataset, count: int) -> np.ndarray:
    pixels = seg.pixel_array
    if pixels.ndim == 2:
        pixels = pixels[np.newaxis]
    if pixels.shape[0] != count:
        raise SeriesError(
            f"SEG {seg.SOPInstanceUID}: {pixels.shape[0]} frames but {count} frame descriptions"
        )
    if str(seg.get("SegmentationType", "BINARY")) == "FRACTIONAL":
        # PS3.3 C.8.20.2.3: a voxel belongs to the segment when more than half of it does.
        return np.asarray(pixels > float(seg.MaximumFractionalValue) / 2)
    return np.asarray(pixels > 0)


def _shared(seg: Dataset, sequence: str, keyword: str) -> list[float] | None:
    for group in seg.get("SharedFunctionalGroupsSequence") or []:
        items = group.get(sequence) or []
        if items and keyword in items[0]:
            return [float(v) for v in items[0].get(keyword)]
    return None


class _Images:
    """The image slices a SEG's frames may land on, and their real-world values."""

    def __init__(self, datasets: Sequence[Dataset], seg: Dataset) -> None:
        if not datasets:
            raise SeriesError("no image datasets to take segment values from")
        self.seg_uid = str(seg.SOPInstanceUID)
        self.by_uid = {str(ds.SOPInstanceUID): ds for ds in datasets}
        frame_of_reference = seg.get("FrameOfReferenceUID")
        orientation = _shared(seg, "PlaneOrientationSequence", "ImageOrientationPatient")
        spacing = _shared(seg, "PixelMeasuresSequence", "PixelSpacing")
        self.placed = [
            ds
            for ds in datasets
            if "ImagePositionPatient" in ds
            and (frame_of_reference is None or ds.get("FrameOfReferenceUID") == frame_of_reference)
            and _close(orientation, ds.get("ImageOrientationPatient"), 1e-4)
            and _close(spacing, ds.get("PixelSpacing"), 1e-4)
        ]
        self.positions = np.array(
            [[float(v) for v in ds.ImagePositionPatient] for ds in self.placed]
        ).reshape(-1, 3)
        self._values: dict[str, np.ndarray] = {}

    def match(self, frame: _Frame) -> Dataset:
        for uid in frame.sources:
            if uid in self.by_uid:
                return self.by_uid[uid]
        if frame.position is None or not self.placed:
            raise SeriesError(
                f"SEG {self.seg_uid}: a frame of segment {frame.segment} refers to none of "
                "the images and no image shares its frame of reference, orientation and spacing"
            )
        distance = np.linalg.norm(self.positions - np.asarray(frame.position), axis=1)
        hits = np.flatnonzero(distance < _SAME_POSITION_MM)
        if hits.size != 1:
            found = "no image" if hits.size == 0 else f"{hits.size} images"
            raise SeriesError(
                f"SEG {self.seg_uid}: {found} at frame position {list(frame.position)}; pass "
                "one volume (one image per position) on the SEG's grid"
            )
        return self.placed[int(hits[0])]

    def values(self, image: Dataset) -> np.ndarray:
        uid = str(image.SOPInstanceUID)
        if uid not in self._values:
            slope = float(image.get("RescaleSlope", 1) or 1)
            intercept = float(image.get("RescaleIntercept", 0) or 0)
            self._values[uid] = image.pixel_array.astype(np.float64) * slope + intercept
        return self._values[uid]


def _close(expected: list[float] | None, found: object, tolerance: float) -> bool:
    if expected is None:
        return True
    if found is None:
        return False
    values = [float(v) for v in found]  # type: ignore[attr-defined]
    return len(values) == len(expected) and bool(np.allclose(values, expected, atol=tolerance))
