"""radiomics: pyradiomics features for every segment of every SEG in the input.

The input holds one or more SEG series and the image series they were made on. Each SEG
names its source in ReferencedSeriesSequence (PS3.3 C.7.6.16.2.22, required in a SEG), so
the pairing needs no parameter; ``source_series_uid`` overrides it for SEGs that lack
the reference. Masks are matched to slices through each frame's source-image reference,
never by frame order, so a SEG that omits empty frames still lines up.

One CSV per SEG, ``JIP_OUTPUT_DIR/<SEG SeriesInstanceUID>/radiomics.csv``, one row per
(series, segment): source series UID, SEG series UID, segment number and label, then the
features pyradiomics names ``<image type>_<class>_<feature>`` (``original_shape_...``,
``log-sigma-1-0-mm-3D_firstorder_...``, ``wavelet-LLH_glcm_...``).

What is computed is the run's choice (``params.schema.json``): a study names its feature
classes, image types, bin width and resampling. The default is a typical organ-level
study's, first-order, shape and GLCM on the original image: seconds per series, where
every class on the whole scan (pyradiomics' defaults) once took a minute.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Mapping
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
from jip_sdk.seg import SegmentMask, read_segment_masks
from pydicom.dataset import Dataset
from radiomics import featureextractor

logger = logging.getLogger("radiomics-operator")

# Room around a segment's bounding box: pyradiomics pads texture kernels by up to this.
CROP_PAD_VOXELS = 2
# pyradiomics' own crop margin (its ``padDistance``) before it filters an image: with a
# filtered image type, cutting closer than this would change the filtered values.
FILTER_PAD_VOXELS = 5
# The ``image_types`` parameter's names -> pyradiomics' image type names.
IMAGE_TYPES = {
    "original": "Original",
    "log": "LoG",
    "wavelet": "Wavelet",
    "square": "Square",
    "squareroot": "SquareRoot",
    "logarithm": "Logarithm",
    "exponential": "Exponential",
    "gradient": "Gradient",
}
ID_COLUMNS = ["series_instance_uid", "seg_series_instance_uid", "segment_number", "segment_label"]


def is_seg(series: InputSeries) -> bool:
    """Whether a series holds Segmentation objects (by its first file's header)."""
    header = pydicom.dcmread(series.files()[0], stop_before_pixels=True)
    return str(header.get("Modality", "")) == "SEG"


def source_series_uid(seg: Dataset, override: str | None, only_image: str | None = None) -> str:
    """The image series a SEG was made on: the parameter if given, else its reference,
    else ``only_image``, the one image series in the input (a SEG from elsewhere without
    ReferencedSeriesSequence, staged by seg-radiomics next to the series its frames
    derive from)."""
    if override:
        return override
    referenced = seg.get("ReferencedSeriesSequence")
    if referenced:
        return str(referenced[0].SeriesInstanceUID)
    if only_image:
        return only_image
    raise SeriesError(
        f"SEG {seg.SOPInstanceUID} has no ReferencedSeriesSequence; "
        "name its image series with the source_series_uid parameter"
    )


def build_extractor(params: Mapping[str, Any]) -> featureextractor.RadiomicsFeatureExtractor:
    """A pyradiomics extractor with only the requested classes on the requested images.

    pyradiomics' provenance (``additionalInfo``: image and mask hashes, mask statistics
    over the whole volume) is off: it is dropped from the CSV anyway and cost more than
    the features on a whole-abdomen CT. ``preCrop`` cuts image and mask to the segment's
    bounding box first, so resampling works on the organ, not the whole scan.
    """
    settings: dict[str, Any] = {
        "binWidth": float(params["bin_width"]),
        "label": 1,
        "additionalInfo": False,
        "preCrop": True,
    }
    if params.get("resampled_spacing_mm"):
        settings["resampledPixelSpacing"] = [float(v) for v in params["resampled_spacing_mm"]]
    extractor = featureextractor.RadiomicsFeatureExtractor(**settings)
    extractor.disableAllFeatures()
    for name in params["feature_classes"]:
        extractor.enableFeatureClassByName(name)
    extractor.disableAllImageTypes()
    for name in params.get("image_types") or ["original"]:
        custom = {"sigma": [float(s) for s in params["log_sigma_mm"]]} if name == "log" else {}
        extractor.enableImageTypeByName(IMAGE_TYPES[name], customArgs=custom)
    return extractor


def crop_pad(params: Mapping[str, Any], image: sitk.Image) -> int:
    """Voxels kept around a segment: a filter needs pyradiomics' own margin (in the grid
    it filters on, so scaled up where the image is resampled to coarser voxels)."""
    if set(params.get("image_types") or ["original"]) <= {"original"}:
        return CROP_PAD_VOXELS
    target = params.get("resampled_spacing_mm")
    scale = (
        max((float(t) / s for t, s in zip(target, image.GetSpacing(), strict=True)), default=1.0)
        if target
        else 1.0
    )
    return math.ceil(FILTER_PAD_VOXELS * max(1.0, scale))


def mask_image(segment: SegmentMask, image: sitk.Image) -> sitk.Image:
    """The segment as a label image on exactly the source image's grid."""
    mask = sitk.GetImageFromArray(segment.mask.astype(np.uint8))
    mask.CopyInformation(image)
    return mask


def crop_to_segment(
    image: sitk.Image, segment: SegmentMask, pad: int = CROP_PAD_VOXELS
) -> tuple[sitk.Image, sitk.Image]:
    """Image and mask cut to the segment's bounding box (plus ``pad`` voxels).

    Every feature reads only voxels inside the mask, so the values do not change; what
    changes is that pyradiomics' mask checks and statistics no longer scan the whole
    scan once per segment (an organ is a few percent of an abdominal CT).
    """
    present = np.nonzero(segment.mask)  # (z, y, x) index arrays
    low = [max(0, int(axis.min()) - pad) for axis in present]
    high = [
        min(size, int(axis.max()) + 1 + pad)
        for axis, size in zip(present, segment.mask.shape, strict=True)
    ]
    # SimpleITK indexes (x, y, z); numpy (z, y, x).
    index = [low[2], low[1], low[0]]
    size = [high[2] - low[2], high[1] - low[1], high[0] - low[0]]
    cropped = sitk.RegionOfInterest(image, size=size, index=index)
    return cropped, sitk.RegionOfInterest(mask_image(segment, image), size=size, index=index)


def features_for(
    extractor: featureextractor.RadiomicsFeatureExtractor, image: sitk.Image, mask: sitk.Image
) -> dict[str, float]:
    """The feature values, without pyradiomics' diagnostics (versions, hashes, settings)."""
    result = extractor.execute(image, mask, label=1)
    return {
        name: float(np.asarray(value))
        for name, value in result.items()
        if not name.startswith("diagnostics_")
    }


def process_seg(
    context: OperatorContext,
    seg_series: InputSeries,
    extractor: featureextractor.RadiomicsFeatureExtractor,
    only_image: str | None = None,
) -> Path:
    """Features for every segment of every SEG file in one SEG series; returns the CSV."""
    rows: list[dict[str, Any]] = []
    wanted = context.params.get("segment_labels")
    for seg in read_datasets(seg_series):
        source_uid = source_series_uid(seg, context.params.get("source_series_uid"), only_image)
        source = sort_slices(read_datasets(find_series(context.input_dir, source_uid)))
        image = load_image(source)
        for segment in read_segment_masks(seg, source):
            if wanted and segment.label not in wanted:
                continue
            if not segment.mask.any():
                logger.warning(
                    "SEG %s segment %d is empty; skipped", seg_series.uid, segment.number
                )
                continue
            cropped = crop_to_segment(image, segment, crop_pad(context.params, image))
            features = features_for(extractor, *cropped)
            rows.append(
                {
                    "series_instance_uid": source_uid,
                    "seg_series_instance_uid": str(seg.SeriesInstanceUID),
                    "segment_number": segment.number,
                    "segment_label": segment.label,
                    **features,
                }
            )
    if not rows:
        raise SeriesError(f"SEG series {seg_series.uid}: no segment to compute features for")
    out = context.output_dir_for(seg_series.uid) / "radiomics.csv"
    feature_names = sorted({k for row in rows for k in row} - set(ID_COLUMNS))
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=ID_COLUMNS + feature_names)
        writer.writeheader()
        writer.writerows(rows)
    logger.info(
        "SEG series %s: %d rows, %d features", seg_series.uid, len(rows), len(feature_names)
    )
    return out


def process(context: OperatorContext) -> None:
    """Compute features for every SEG series in the input."""
    every = list(iter_series(context.input_dir))
    seg_series = [s for s in every if is_seg(s)]
    images = [s.uid for s in every if not is_seg(s)]
    only_image = images[0] if len(images) == 1 else None
    if not seg_series:
        raise SeriesError(
            f"no SEG series in {context.input_dir}; radiomics needs a SEG and its image series"
        )
    extractor = build_extractor(context.params)
    for index, series in enumerate(seg_series):
        report_progress(index / len(seg_series), series=series.uid, message="extracting")
        process_seg(context, series, extractor, only_image)
        report_progress((index + 1) / len(seg_series), series=series.uid, message="written")


if __name__ == "__main__":
    run_operator(process, schema_path=Path(__file__).with_name("params.schema.json"))
