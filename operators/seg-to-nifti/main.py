"""seg-to-nifti: each SEG as a NIfTI label map on its image's grid, the image as NIfTI, and
a table of what each label value means.

Research tools (nnU-Net, MONAI, ITK-SNAP, 3D Slicer's NIfTI import) want a label map, not a
DICOM SEG. The input holds SEG series and the image series they were made on (the SEG's
ReferencedSeriesSequence, or ``source_series_uid``, or the one image series in the input);
masks are placed on the image's slices through each frame's source-image reference, so a
SEG that omits empty frames still lines up.

Per SEG series, ``JIP_OUTPUT_DIR/<SEG SeriesInstanceUID>/``: ``labels.nii.gz`` (uint16, the
segment number in each voxel, 0 outside), ``image.nii.gz`` (modality units, e.g. HU) and
``labels.json`` (number, label, category and type codes, colour, voxel count, volume).
A binary SEG may let segments overlap; a label map cannot: ``on_overlap`` says whether
the later segment wins (counted in the table) or the SEG is refused.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import SimpleITK as sitk
from jip_sdk import (
    InputSeries,
    OperatorContext,
    SeriesError,
    find_series,
    iter_series,
    load_image,
    read_datasets,
    report_progress,
    run_operator,
    sort_slices,
)
from jip_sdk.seg import read_segment_masks
from pydicom.dataset import Dataset

logger = logging.getLogger("seg-to-nifti")


def modality_of(series: InputSeries) -> str:
    return str(pydicom.dcmread(series.files()[0], stop_before_pixels=True).get("Modality", ""))


def source_of(seg: Dataset, override: str | None, images: list[str]) -> str:
    """The image series of a SEG: the parameter, its reference, else the only image."""
    named = [str(item.SeriesInstanceUID) for item in seg.get("ReferencedSeriesSequence", [])]
    for candidate in (
        ([override] if override else []) + named + (images if len(images) == 1 else [])
    ):
        return candidate
    raise SeriesError(
        f"SEG {seg.SOPInstanceUID} names no image series and the input holds "
        f"{len(images)} image series; set source_series_uid"
    )


def _code(item: Dataset | None) -> dict[str, str] | None:
    if item is None:
        return None
    return {
        "value": str(item.CodeValue),
        "scheme": str(item.CodingSchemeDesignator),
        "meaning": str(item.CodeMeaning),
    }


def describe_segments(seg: Dataset) -> dict[int, dict[str, Any]]:
    """Segment number -> label, codes and colour, from the SegmentSequence."""
    table: dict[int, dict[str, Any]] = {}
    for item in seg.SegmentSequence:
        colour = item.get("RecommendedDisplayCIELabValue")
        table[int(item.SegmentNumber)] = {
            "value": int(item.SegmentNumber),
            "label": str(item.SegmentLabel),
            "category": _code(item.get("SegmentedPropertyCategoryCodeSequence", [None])[0]),
            "type": _code(item.get("SegmentedPropertyTypeCodeSequence", [None])[0]),
            "cielab": [int(v) for v in colour] if colour else None,
        }
    return table


def label_map(
    seg: Dataset, source: list[Dataset], on_overlap: str
) -> tuple[np.ndarray, dict[int, int]]:
    """The SEG's segments painted into one uint16 volume ``[z, y, x]``, in segment order;
    returns it and, per segment, how many of its voxels a later segment took."""
    masks = read_segment_masks(seg, source)
    labels = np.zeros(masks[0].mask.shape if masks else (0,), dtype=np.uint16)
    lost: dict[int, int] = {}
    for segment in masks:
        overlap = segment.mask & (labels > 0)
        if overlap.any():
            if on_overlap == "fail":
                raise SeriesError(
                    f"SEG {seg.SOPInstanceUID}: segment {segment.number} ({segment.label}) "
                    f"overlaps an earlier one in {int(overlap.sum())} voxels; a label map "
                    "holds one label per voxel (on_overlap: later_wins keeps the later one)"
                )
            for number in np.unique(labels[overlap]):
                lost[int(number)] = lost.get(int(number), 0) + int(
                    (labels[overlap] == number).sum()
                )
        labels[segment.mask] = segment.number
    return labels, lost


def convert(context: OperatorContext, seg_series: InputSeries, images: list[str]) -> Path:
    """Write one SEG series' label map, image and table; returns the output folder."""
    (seg, *others) = read_datasets(seg_series)
    if others:
        raise SeriesError(
            f"SEG series {seg_series.uid} holds {len(others) + 1} SEGs; one per series"
        )
    source_uid = source_of(seg, context.params.get("source_series_uid"), images)
    source = sort_slices(read_datasets(find_series(context.input_dir, source_uid)))
    image = load_image(source)
    labels, lost = label_map(seg, source, str(context.params["on_overlap"]))
    label_image = sitk.GetImageFromArray(labels)
    label_image.CopyInformation(image)
    out = context.output_dir_for(seg_series.uid)
    sitk.WriteImage(label_image, str(out / "labels.nii.gz"), useCompression=True)
    if context.params["include_image"]:
        sitk.WriteImage(image, str(out / "image.nii.gz"), useCompression=True)
    voxel_ml = float(np.prod(image.GetSpacing())) / 1000.0
    table = describe_segments(seg)
    for number, entry in table.items():
        count = int((labels == number).sum())
        entry.update(
            voxels=count, volume_ml=round(count * voxel_ml, 6), lost_to_overlap=lost.get(number, 0)
        )
    document = {
        "seg_series_instance_uid": seg_series.uid,
        "source_series_instance_uid": source_uid,
        "background": 0,
        "labels": [table[n] for n in sorted(table)],
    }
    (out / "labels.json").write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    logger.info("SEG %s: %d labels on %s", seg_series.uid, len(table), source_uid)
    return out


def process(context: OperatorContext) -> None:
    """Convert every SEG series of the input."""
    every = iter_series(context.input_dir)
    kinds = {series.uid: modality_of(series) for series in every}
    segs = [series for series in every if kinds[series.uid] == "SEG"]
    if not segs:
        raise SeriesError(
            f"no SEG series in {context.input_dir}; seg-to-nifti needs a SEG and its image"
        )
    images = [uid for uid, modality in kinds.items() if modality not in ("SEG", "RTSTRUCT", "SR")]
    for index, series in enumerate(segs):
        convert(context, series, images)
        report_progress((index + 1) / len(segs), series=series.uid, message="written")


if __name__ == "__main__":
    run_operator(process, schema_path=Path(__file__).with_name("params.schema.json"))
