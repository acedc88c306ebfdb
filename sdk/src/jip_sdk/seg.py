"""Write and read DICOM Segmentation objects (PS3.3 A.51) for operators.

Segmentation results leave an operator as a SEG that references its source series, so
viewers (OHIF) overlay it and the index links it to its source. Masks are numpy arrays
``(slices, rows, columns)`` whose slice k belongs to ``sort_slices(source)[k]``, the same
order ``load_image`` uses, so an operator can go from a SimpleITK result to a SEG without
thinking about frame order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from jip_sdk.series import SeriesError, sort_slices

# Laterality modifiers (SNOMED CT, CID 244) for paired organs such as the kidneys.
RIGHT = Code("24028007", "SCT", "Right")
LEFT = Code("7771000", "SCT", "Left")


@dataclass(frozen=True)
class SegmentSpec:
    """One segment to write: what it is (coded) and where it is (a boolean mask)."""

    label: str
    category: Code
    property_type: Code
    mask: np.ndarray
    laterality: Code | None = None
    color_rgb: tuple[int, int, int] | None = None


@dataclass(frozen=True)
class SegAlgorithm:
    """How the segments were made (SEG Segment Algorithm Identification, PS3.3 C.8.20.2)."""

    name: str
    version: str
    family: Code = codes.cid7162.ArtificialIntelligence
    automatic: bool = True


@dataclass(frozen=True)
class SegmentMask:
    """A segment read back from a SEG, aligned with the sorted source slices."""

    number: int
    label: str
    mask: np.ndarray


def build_segmentation(
    source: Sequence[Dataset],
    segments: Sequence[SegmentSpec],
    *,
    algorithm: SegAlgorithm,
    series_description: str,
    series_number: int = 900,
    manufacturer: str = "JIP",
) -> hd.seg.Segmentation:
    """A BINARY SEG with one segment per spec, numbered 1..n in the given order."""
    if not segments:
        raise ValueError("a SEG needs at least one segment")
    ordered = sort_slices(source)
    shape = (len(ordered), int(ordered[0].Rows), int(ordered[0].Columns))
    for spec in segments:
        if spec.mask.shape != shape:
            raise ValueError(f"segment {spec.label!r}: mask shape {spec.mask.shape} != {shape}")
    algorithm_id = hd.AlgorithmIdentificationSequence(
        name=algorithm.name, family=algorithm.family, version=algorithm.version
    )
    descriptions = [
        _describe(number, spec, algorithm, algorithm_id)
        for number, spec in enumerate(segments, start=1)
    ]
    pixels = np.stack([spec.mask.astype(bool) for spec in segments], axis=-1).astype(np.uint8)
    seg = hd.seg.Segmentation(
        source_images=ordered,
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=manufacturer,
        manufacturer_model_name=algorithm.name,
        software_versions=algorithm.version,
        device_serial_number="1",
        series_description=series_description,
        content_label="SEGMENTATION",
        content_description=series_description[:64],
        # Empty frames carry no information; dropping them keeps the object small.
        omit_empty_frames=True,
    )
    return seg


def read_segment_masks(seg: Dataset, source: Sequence[Dataset]) -> list[SegmentMask]:
    """Every segment of a SEG as a boolean mask aligned with ``sort_slices(source)``.

    Frames are matched to source slices through their source-image references
    (DerivationImageSequence), which every conformant SEG derived from single-frame
    images carries; slices no frame refers to are empty.
    """
    segmentation = (
        seg if isinstance(seg, hd.seg.Segmentation) else hd.seg.Segmentation.from_dataset(seg)
    )
    ordered = sort_slices(source)
    uids = [str(ds.SOPInstanceUID) for ds in ordered]
    numbers = list(segmentation.segment_numbers)
    try:
        pixels = segmentation.get_pixels_by_source_instance(
            uids, segment_numbers=numbers, assert_missing_frames_are_empty=True
        )
    except (ValueError, KeyError, RuntimeError) as exc:
        raise SeriesError(
            f"SEG {seg.get('SOPInstanceUID', '?')} cannot be aligned with series "
            f"{ordered[0].get('SeriesInstanceUID', '?')}: {exc}"
        ) from exc
    masks = []
    for index, number in enumerate(numbers):
        label = str(segmentation.get_segment_description(number).segment_label)
        masks.append(SegmentMask(number=number, label=label, mask=pixels[..., index] > 0))
    return masks


def _describe(
    number: int,
    spec: SegmentSpec,
    algorithm: SegAlgorithm,
    algorithm_id: hd.AlgorithmIdentificationSequence,
) -> hd.seg.SegmentDescription:
    description = hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=spec.label,
        segmented_property_category=spec.category,
        segmented_property_type=spec.property_type,
        algorithm_type=(
            hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
            if algorithm.automatic
            else hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC
        ),
        algorithm_identification=algorithm_id,
        display_color=hd.color.CIELabColor.from_rgb(*spec.color_rgb) if spec.color_rgb else None,
    )
    if spec.laterality is not None:
        # PS3.3 C.8.20.2: laterality of a paired structure is a modifier of the type.
        description.SegmentedPropertyTypeCodeSequence[
            0
        ].SegmentedPropertyTypeModifierCodeSequence = [
            hd.sr.CodedConcept(
                value=spec.laterality.value,
                scheme_designator=spec.laterality.scheme_designator,
                meaning=spec.laterality.meaning,
            )
        ]
    return description
