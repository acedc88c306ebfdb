"""nifti-to-seg: a NIfTI label map and the DICOM series it was drawn on → a DICOM SEG.

A model trained on NIfTI (nnU-Net, MONAI) or a research tool writes label maps; the store,
the viewers and radiomics read SEG. The label map is resampled (nearest neighbour) onto
the DICOM series' grid, both placed in patient space by SimpleITK (NIfTI's RAS header
read into DICOM's LPS), so a map on another grid or cropped still lands where it belongs.
Each label value becomes one segment, numbered in value order, named from ``segments``
(or from a ``labels.json`` that seg-to-nifti wrote next to the map). A value without a
name is refused rather than guessed.

Input: ``JIP_INPUT_DIR/<SeriesInstanceUID>/*.dcm`` (one image series) and the label map
(``*.nii.gz`` or ``*.nii``) anywhere in the input. Output:
``JIP_OUTPUT_DIR/<SEG SeriesInstanceUID>/seg.dcm``, referencing the series.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import SimpleITK as sitk
from jip_sdk import (
    OperatorContext,
    SeriesError,
    iter_series,
    load_image,
    read_datasets,
    report_progress,
    run_operator,
    sort_slices,
)
from jip_sdk.seg import SegAlgorithm, SegmentSpec, build_segmentation
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

logger = logging.getLogger("nifti-to-seg")

# What a segment is when nothing more is said: tissue (SCT 85756007, CID 7150 and 7166).
DEFAULT_CODE = {"value": "85756007", "scheme": "SCT", "meaning": "Tissue"}


def find_label_map(input_dir: Path, name: str | None) -> Path:
    """The one NIfTI file of the input (or the one called ``name``)."""
    found = sorted(p for p in input_dir.rglob("*.nii*") if p.name.endswith((".nii", ".nii.gz")))
    if name:
        found = [p for p in found if p.name == name]
    if len(found) != 1:
        listed = ", ".join(p.name for p in found) or "none"
        raise SeriesError(
            f"expected one NIfTI label map in {input_dir} (found: {listed}); "
            "name it with the label_file parameter"
        )
    return found[0]


def image_series(input_dir: Path) -> list[pydicom.Dataset]:
    """The one DICOM image series of the input, in slice order."""
    series = iter_series(input_dir)
    if len(series) != 1:
        raise SeriesError(
            f"expected the one DICOM series the label map was drawn on, found {len(series)}"
        )
    datasets = read_datasets(series[0])
    modality = str(datasets[0].get("Modality", ""))
    if modality in ("SEG", "RTSTRUCT", "SR"):
        raise SeriesError(f"series {series[0].uid} has Modality {modality}, not an image series")
    return sort_slices(datasets)


def on_grid(label_map: sitk.Image, reference: sitk.Image) -> np.ndarray:
    """The label map resampled onto the reference's voxels, as integers ``[z, y, x]``."""
    if label_map.GetDimension() != 3:
        raise SeriesError(f"the label map has {label_map.GetDimension()} dimensions; expected 3")
    resampled = sitk.Resample(
        label_map, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt32
    )
    return sitk.GetArrayFromImage(resampled).astype(np.int64)


def _concept(code: Mapping[str, Any] | None) -> Code:
    code = code or DEFAULT_CODE
    return Code(str(code["value"]), str(code["scheme"]), str(code["meaning"]))


def segment_names(params: Mapping[str, Any], label_path: Path) -> dict[int, Mapping[str, Any]]:
    """Value -> description, from the parameters, else from labels.json beside the map."""
    entries = params.get("segments")
    if not entries:
        table = label_path.with_name("labels.json")
        if table.is_file():
            entries = json.loads(table.read_text(encoding="utf-8")).get("labels") or []
    return {int(entry["value"]): entry for entry in entries or []}


def segments_of(values: np.ndarray, names: Mapping[int, Mapping[str, Any]]) -> list[SegmentSpec]:
    """One segment per label value present (0 is background), in value order."""
    present = [int(v) for v in np.unique(values) if v != 0]
    if not present:
        raise SeriesError("the label map holds no label on the series' grid (all 0 there)")
    unnamed = [v for v in present if v not in names]
    if unnamed:
        raise SeriesError(
            f"label values {', '.join(map(str, unnamed))} have no name; add "
            '{"value": N, "label": "..."} to the segments parameter'
        )
    return [
        SegmentSpec(
            label=str(names[value]["label"]),
            category=_concept(names[value].get("category")),
            property_type=_concept(names[value].get("type")),
            mask=values == value,
        )
        for value in present
    ]


def process(context: OperatorContext) -> None:
    """Write the SEG of the input's label map on its DICOM series."""
    label_path = find_label_map(context.input_dir, context.params.get("label_file"))
    source = image_series(context.input_dir)
    report_progress(0.2, series=str(source[0].SeriesInstanceUID), message="resampling")
    values = on_grid(sitk.ReadImage(str(label_path)), load_image(source))
    specs = segments_of(values, segment_names(context.params, label_path))
    seg = build_segmentation(
        source,
        specs,
        algorithm=SegAlgorithm(
            name=str(context.params["algorithm_name"])[:64],
            version="1",
            family=codes.cid7162.ArtificialIntelligence,
        ),
        series_description=str(context.params["series_description"])[:64],
    )
    folder = context.output_dir_for(str(seg.SeriesInstanceUID))
    seg.save_as(folder / "seg.dcm")
    logger.info("SEG %s: %d segments from %s", seg.SeriesInstanceUID, len(specs), label_path.name)
    report_progress(1.0, series=str(source[0].SeriesInstanceUID), message="written")


if __name__ == "__main__":
    run_operator(process, schema_path=Path(__file__).with_name("params.schema.json"))
