"""rtstruct-to-seg: the contours of an RT Structure Set as a DICOM SEG on the image series.

Radiotherapy planning systems and many annotation tools export RTSTRUCT (planar polygons
in patient space); the store's viewers, radiomics and the NIfTI exports read SEG. Each
closed planar contour is mapped into the image's voxel space (SimpleITK's geometry of
the series), put on the slice it lies on, and filled with Pillow's polygon rasteriser;
contours of one ROI on one slice combine by even-odd (XOR), so an inner contour is a
hole, as RT systems draw them. Points and open contours hold no area and are skipped.

Input: ``JIP_INPUT_DIR/<RTSTRUCT series>/*.dcm`` and the image series it references
(ReferencedFrameOfReferenceSequence, or ``source_series_uid``, or the one image series
of the input). Output: ``JIP_OUTPUT_DIR/<SEG SeriesInstanceUID>/seg.dcm``, one segment
per ROI (named by ROIName) that has area on the series.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import SimpleITK as sitk
from jip_sdk import (
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
from jip_sdk.seg import SegAlgorithm, SegmentSpec, build_segmentation
from PIL import Image, ImageDraw
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

logger = logging.getLogger("rtstruct-to-seg")

SLICE_TOLERANCE = 0.25  # of a slice: a contour further from every slice lies between them
# RTROIInterpretedType -> (category, type): organs are anatomy, the rest is tissue.
ANATOMY = (codes.SCT.AnatomicalStructure, codes.SCT.Organ)
TISSUE = (codes.SCT.Tissue, codes.SCT.Tissue)
INTERPRETED = {"ORGAN": ANATOMY, "AVOIDANCE": ANATOMY}


def referenced_series(rtstruct: Dataset) -> list[str]:
    """Series named under ReferencedFrameOfReferenceSequence (PS3.3 C.8.8.5)."""
    return [
        str(series.SeriesInstanceUID)
        for frame in rtstruct.get("ReferencedFrameOfReferenceSequence", [])
        for study in frame.get("RTReferencedStudySequence", [])
        for series in study.get("RTReferencedSeriesSequence", [])
    ]


def source_of(rtstruct: Dataset, override: str | None, images: Sequence[str]) -> str:
    """The image series: the parameter, the structure set's reference, else the only one."""
    for candidate in [*([override] if override else []), *referenced_series(rtstruct)]:
        return candidate
    if len(images) == 1:
        return images[0]
    raise SeriesError(
        f"RTSTRUCT {rtstruct.SOPInstanceUID} names no image series and the input holds "
        f"{len(images)}; set source_series_uid"
    )


def contours(rtstruct: Dataset) -> Iterator[tuple[int, np.ndarray]]:
    """(ROI number, points [n, 3] in mm, LPS) of every closed planar contour."""
    for roi in rtstruct.get("ROIContourSequence", []):
        number = int(roi.ReferencedROINumber)
        for contour in roi.get("ContourSequence", []):
            kind = str(contour.get("ContourGeometricType", ""))
            if kind != "CLOSED_PLANAR":
                logger.warning("ROI %d: %s contour skipped (no area)", number, kind or "untyped")
                continue
            points = np.asarray([float(v) for v in contour.ContourData], dtype=float)
            if points.size < 9 or points.size % 3:
                raise SeriesError(f"ROI {number}: a contour with {points.size} coordinates")
            yield number, points.reshape(-1, 3)


def rasterise(image: sitk.Image, points: np.ndarray) -> tuple[int, np.ndarray] | None:
    """(slice index, filled polygon [rows, columns]) of one contour; None off the grid."""
    index = np.array([image.TransformPhysicalPointToContinuousIndex(p.tolist()) for p in points])
    k = float(np.median(index[:, 2]))
    nearest = round(k)
    columns, rows, slices = image.GetSize()
    if abs(k - nearest) > SLICE_TOLERANCE or not 0 <= nearest < slices:
        return None
    canvas = Image.new("1", (columns, rows), 0)
    ImageDraw.Draw(canvas).polygon(
        [(float(x), float(y)) for x, y in index[:, :2]], fill=1, outline=1
    )
    return nearest, np.asarray(canvas, dtype=bool)


def roi_masks(rtstruct: Dataset, image: sitk.Image) -> dict[int, np.ndarray]:
    """ROI number -> its mask ``[z, y, x]`` on the image's grid (even-odd per slice)."""
    columns, rows, slices = image.GetSize()
    masks: dict[int, np.ndarray] = {}
    skipped = 0
    for number, points in contours(rtstruct):
        placed = rasterise(image, points)
        if placed is None:
            skipped += 1
            continue
        k, filled = placed
        mask = masks.setdefault(number, np.zeros((slices, rows, columns), dtype=bool))
        mask[k] ^= filled
    if skipped:
        logger.warning("%d contours lie off the series' slices and were skipped", skipped)
    return masks


def segment_specs(
    rtstruct: Dataset, masks: Mapping[int, np.ndarray], wanted: Any
) -> list[SegmentSpec]:
    """One segment per ROI with area, in ROI number order, named by ROIName."""
    names = {int(r.ROINumber): str(r.ROIName) for r in rtstruct.get("StructureSetROISequence", [])}
    kinds = {
        int(o.ReferencedROINumber): str(o.get("RTROIInterpretedType", ""))
        for o in rtstruct.get("RTROIObservationsSequence", [])
    }
    specs = []
    for number in sorted(masks):
        label = names.get(number, f"ROI {number}")
        if (wanted and label not in wanted) or not masks[number].any():
            continue
        category, kind = INTERPRETED.get(kinds.get(number, ""), TISSUE)
        specs.append(
            SegmentSpec(label=label[:64], category=category, property_type=kind, mask=masks[number])
        )
    return specs


def process(context: OperatorContext) -> None:
    """Convert every RTSTRUCT of the input into one SEG each."""
    every = iter_series(context.input_dir)
    heads = {s.uid: pydicom.dcmread(s.files()[0], stop_before_pixels=True) for s in every}
    structure_sets = [s for s in every if heads[s.uid].get("Modality") == "RTSTRUCT"]
    if not structure_sets:
        raise SeriesError(
            f"no RTSTRUCT series in {context.input_dir}; rtstruct-to-seg needs one and its image series"
        )
    images = [uid for uid, h in heads.items() if h.get("Modality") not in ("RTSTRUCT", "SEG", "SR")]
    for index, series in enumerate(structure_sets):
        for rtstruct in read_datasets(series):
            source_uid = source_of(rtstruct, context.params.get("source_series_uid"), images)
            source = sort_slices(read_datasets(find_series(context.input_dir, source_uid)))
            specs = segment_specs(
                rtstruct, roi_masks(rtstruct, load_image(source)), context.params.get("roi_names")
            )
            if not specs:
                raise SeriesError(
                    f"RTSTRUCT {rtstruct.SOPInstanceUID}: no ROI has area on series {source_uid}"
                    + (" among roi_names" if context.params.get("roi_names") else "")
                )
            seg = build_segmentation(
                source,
                specs,
                algorithm=SegAlgorithm(
                    name="rtstruct-to-seg",
                    version="1",
                    family=codes.cid7162.ManualProcessing,
                    automatic=False,
                ),
                series_description=str(context.params["series_description"])[:64],
            )
            seg.save_as(context.output_dir_for(str(seg.SeriesInstanceUID)) / "seg.dcm")
            logger.info(
                "RTSTRUCT %s: SEG %s with %d segments",
                rtstruct.SOPInstanceUID,
                seg.SeriesInstanceUID,
                len(specs),
            )
        report_progress((index + 1) / len(structure_sets), series=series.uid, message="written")


if __name__ == "__main__":
    run_operator(process, schema_path=Path(__file__).with_name("params.schema.json"))
