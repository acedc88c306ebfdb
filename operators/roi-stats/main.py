"""roi-stats: sufficient statistics of an image's values inside each segment of a SEG.

The input holds one or more SEG series and the image series to measure (an ADC map, or
any scalar image). A SEG need not reference the image it measures: a SEG drawn on a DWI
series measures that series' ADC map, which has the same geometry. So each SEG is paired
with every scalar image series of the input in its frame of reference (one image per
slice position; a multi-b DWI series is not one and is skipped), or with the one
``image_series_uid`` names. Values are real-world values (rescale applied), taken by
``jip_sdk.roi.segment_values``, the function the platform's federated jobs use too.

Output, per image series: ``JIP_OUTPUT_DIR/<image SeriesInstanceUID>/roi_stats.json``:
``{"image_series_instance_uid", "segments": [{seg_series_instance_uid,
seg_sop_instance_uid, segment_label, n, sum, mean, m2, variance, min, max}]}``, where
``m2`` is Σ(x − mean)² and ``variance`` the sample variance m2 / (n − 1): the sufficient
statistics from which pooled means and variances over many series are exact.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
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
    run_operator,
    segment_values,
)
from pydicom.dataset import Dataset

logger = logging.getLogger("roi-stats-operator")

OUTPUT_NAME = "roi_stats.json"


def sufficient_stats(values: np.ndarray) -> dict[str, Any]:
    """n, Σx, mean, M2 = Σ(x − mean)², sample variance, min, max (None where undefined)."""
    x = np.asarray(values, dtype=np.float64)
    n = int(x.size)
    if n == 0:
        return {
            "n": 0,
            "sum": 0.0,
            "mean": None,
            "m2": 0.0,
            "variance": None,
            "min": None,
            "max": None,
        }
    mean = float(np.mean(x))
    m2 = float(np.sum(np.square(x - mean)))
    return {
        "n": n,
        "sum": float(np.sum(x)),
        "mean": mean,
        "m2": m2,
        "variance": m2 / (n - 1) if n > 1 else None,
        "min": float(np.min(x)),
        "max": float(np.max(x)),
    }


def is_volume(datasets: Sequence[Dataset]) -> bool:
    """One single-frame image per slice position (not a SEG, not a multi-b series)."""
    if not datasets or str(datasets[0].get("Modality", "")) == "SEG":
        return False
    positions = set()
    for ds in datasets:
        if "ImagePositionPatient" not in ds or int(ds.get("NumberOfFrames", 1) or 1) > 1:
            return False
        positions.add(tuple(round(float(v), 3) for v in ds.ImagePositionPatient))
    return len(positions) == len(datasets)


def pairs(
    segs: Sequence[Dataset], images: dict[str, list[Dataset]], wanted: str | None
) -> list[tuple[Dataset, str]]:
    """(SEG, image series UID) to measure: ``wanted`` if given, else every volume in the
    SEG's frame of reference."""
    found = []
    for seg in segs:
        matches = [
            uid
            for uid, datasets in images.items()
            if (uid == wanted if wanted else is_volume(datasets))
            and (wanted or datasets[0].get("FrameOfReferenceUID") == seg.get("FrameOfReferenceUID"))
        ]
        if not matches:
            raise SeriesError(
                f"SEG {seg.SOPInstanceUID}: no image series "
                + (
                    f"{wanted} in the input"
                    if wanted
                    else "in its frame of reference, one image per position"
                )
            )
        found += [(seg, uid) for uid in matches]
    return found


def process(context: OperatorContext) -> None:
    """Statistics per segment for every (SEG, image series) pair in the input."""
    segs: list[Dataset] = []
    images: dict[str, list[Dataset]] = {}
    for series in iter_series(context.input_dir):
        datasets = read_datasets(series)
        if str(datasets[0].get("Modality", "")) == "SEG":
            segs += datasets
        else:
            images[_uid(series, datasets)] = datasets
    if not segs:
        raise SeriesError(f"no SEG series in {context.input_dir}; roi-stats needs a SEG")
    wanted = context.params.get("image_series_uid")
    results: dict[str, list[dict[str, Any]]] = {}
    todo = pairs(segs, images, wanted)
    for index, (seg, uid) in enumerate(todo):
        report_progress(index / len(todo), series=uid, message="measuring segments")
        for label, values in segment_values(images[uid], seg).items():
            results.setdefault(uid, []).append(
                {
                    "seg_series_instance_uid": str(seg.SeriesInstanceUID),
                    "seg_sop_instance_uid": str(seg.SOPInstanceUID),
                    "segment_label": label,
                    **sufficient_stats(values),
                }
            )
    for uid, segments in results.items():
        out = context.output_dir_for(uid) / OUTPUT_NAME
        document = {"image_series_instance_uid": uid, "segments": segments}
        out.write_text(json.dumps(document, indent=2), encoding="utf-8")
        logger.info("series %s: %d segments measured", uid, len(segments))


def _uid(series: InputSeries, datasets: Sequence[Dataset]) -> str:
    return str(datasets[0].get("SeriesInstanceUID", series.uid))


if __name__ == "__main__":
    run_operator(process, schema_path=Path(__file__).with_name("params.schema.json"))
