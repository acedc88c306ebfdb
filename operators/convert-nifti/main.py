"""convert-nifti: each input image series as a NIfTI volume with a JSON sidecar.

Research tools (nnU-Net, FSL, ITK-SNAP, MONAI) read NIfTI, not DICOM. Slices are ordered by
position along the slice normal and the modality LUT is applied (HU for CT), so the volume
is right however the files were named. SimpleITK writes the LPS geometry into the NIfTI
qform/sform in its RAS convention, so any NIfTI reader places the volume correctly.

The sidecar carries technical header fields only: no patient name, ID, birth date or
study date, since NIfTI files tend to travel further than DICOM does.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
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
from pydicom.dataset import Dataset

logger = logging.getLogger("convert-nifti")

# Modalities whose instances are not slices of an image volume.
NON_IMAGE_MODALITIES = frozenset(
    {"SEG", "SR", "RTSTRUCT", "RTPLAN", "RTDOSE", "KO", "PR", "REG", "DOC", "ECG"}
)
# Technical header fields copied to the sidecar (none identifies the patient).
SIDECAR_KEYWORDS = (
    "Modality",
    "SeriesInstanceUID",
    "StudyInstanceUID",
    "SeriesNumber",
    "SeriesDescription",
    "Manufacturer",
    "ManufacturerModelName",
    "BodyPartExamined",
    "SliceThickness",
    "PixelSpacing",
    "ImageOrientationPatient",
    "ConvolutionKernel",
    "KVP",
    "RescaleSlope",
    "RescaleIntercept",
    "RescaleType",
)


def check_image_series(datasets: list[Dataset], series_uid: str) -> None:
    """Fail with a clear message for series that are not single-frame image slices."""
    modality = str(datasets[0].get("Modality", ""))
    if modality in NON_IMAGE_MODALITIES:
        raise SeriesError(
            f"series {series_uid} has Modality {modality}, which is not an image volume; "
            "this operator converts image series (CT, MR, PT, ...)"
        )
    if "PixelData" not in datasets[0]:
        raise SeriesError(f"series {series_uid} has no pixel data")


def cast(image: sitk.Image, dtype: str) -> sitk.Image:
    """int16 when asked, or for "auto" when every voxel is an integer that fits; else float32."""
    if dtype == "float32":
        return image
    values = sitk.GetArrayViewFromImage(image)
    fits = bool(np.all(np.mod(values, 1) == 0)) and values.min() >= -32768 and values.max() <= 32767
    if dtype == "int16" and not fits:
        raise SeriesError("values do not fit int16 without loss; use dtype float32 or auto")
    return sitk.Cast(image, sitk.sitkInt16) if fits else image


def sidecar(ordered: list[Dataset], image: sitk.Image) -> dict[str, Any]:
    """Header fields plus the volume's geometry, in JSON-friendly types."""
    first = ordered[0]
    fields: dict[str, Any] = {}
    for keyword in SIDECAR_KEYWORDS:
        if keyword not in first or first[keyword].VM == 0:
            continue
        element = first[keyword]
        values = element.value if element.VM > 1 else [element.value]
        plain = [_plain(v) for v in values]
        fields[keyword] = plain if element.VM > 1 else plain[0]
    fields["NumberOfSlices"] = len(ordered)
    fields["VoxelSpacingMm"] = list(image.GetSpacing())
    fields["OriginLPSMm"] = list(image.GetOrigin())
    fields["DirectionLPS"] = list(image.GetDirection())
    fields["Size"] = list(image.GetSize())
    fields["DataType"] = image.GetPixelIDTypeAsString()
    fields["ValuesAreModalityUnits"] = True  # rescale slope/intercept already applied
    return fields


def process(context: OperatorContext) -> None:
    """Convert every input series."""
    name = str(context.params["filename"])
    all_series = iter_series(context.input_dir)
    for index, series in enumerate(all_series):
        datasets = read_datasets(series)
        check_image_series(datasets, series.uid)
        ordered = sort_slices(datasets)
        image = cast(load_image(ordered), str(context.params["dtype"]))
        out = context.output_dir_for(series.uid)
        sitk.WriteImage(image, str(out / f"{name}.nii.gz"), useCompression=True)
        (out / f"{name}.json").write_text(
            json.dumps(sidecar(ordered, image), indent=2) + "\n", encoding="utf-8"
        )
        logger.info(
            "series %s: %s volume %s written",
            series.uid,
            image.GetPixelIDTypeAsString(),
            image.GetSize(),
        )
        report_progress((index + 1) / len(all_series), series=series.uid, message="written")


def _plain(value: Any) -> Any:
    """pydicom's IS/DS/PersonName and friends as plain JSON values."""
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value)


if __name__ == "__main__":
    run_operator(process, schema_path=Path(__file__).with_name("params.schema.json"))
