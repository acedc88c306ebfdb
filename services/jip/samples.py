"""Realistic synthetic DICOM made in code: tests, benchmarks and demos share it.

Series carry the headers real scanners write (patient, study, series, equipment,
geometry, rescale, windowing) so that C-FIND, QIDO, metadata extraction and rendering
see what they would see from a hospital. Pixel data is a cheap smooth pattern, not
anatomy (``jip_sdk.phantom`` makes an abdominal phantom with organs).
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)

_MANUFACTURERS = [
    ("SIEMENS", "SOMATOM Force"),
    ("GE MEDICAL SYSTEMS", "Revolution CT"),
    ("Philips", "IQon Spectral CT"),
    ("Canon Medical Systems", "Aquilion ONE"),
]
_BODY_PARTS = ["ABDOMEN", "CHEST", "HEAD", "PELVIS", "NECK"]
_FAMILY = ["Meyer", "Schmidt", "Novak", "Rossi", "Dubois", "Jansen", "Kowalski", "Garcia"]
_GIVEN = ["Anna", "Lukas", "Marie", "Jonas", "Sofia", "Elias", "Lea", "Noah"]


@dataclass(frozen=True)
class PatientInfo:
    patient_id: str
    name: str
    birth_date: str
    sex: str


def random_patient(rng: random.Random, index: int) -> PatientInfo:
    birth = dt.date(1940, 1, 1) + dt.timedelta(days=rng.randrange(0, 365 * 60))
    return PatientInfo(
        patient_id=f"PAT{index:05d}",
        name=f"{rng.choice(_FAMILY)}^{rng.choice(_GIVEN)}",
        birth_date=birth.strftime("%Y%m%d"),
        sex=rng.choice(["F", "M"]),
    )


def _pattern(rows: int, columns: int, index: int) -> np.ndarray:
    y, x = np.ogrid[:rows, :columns]
    cy, cx = rows / 2, columns / 2
    radius = np.hypot(y - cy, x - cx) / max(rows, columns)
    values = 1000 + 400 * np.cos(radius * 12 + index * 0.1)  # stored values, HU = v - 1024
    values[radius > 0.45] = 0  # air outside the body
    return values.astype(np.uint16)


def _age(birth_date: str, study_date: str) -> str:
    born = dt.datetime.strptime(birth_date, "%Y%m%d").date()
    seen = dt.datetime.strptime(study_date, "%Y%m%d").date()
    years = seen.year - born.year - ((seen.month, seen.day) < (born.month, born.day))
    return f"{years:03d}Y"


def image_series(
    *,
    patient: PatientInfo,
    modality: str = "CT",
    study_instance_uid: str | None = None,
    study_date: str = "20240115",
    series_number: int = 1,
    slices: int = 10,
    rows: int = 512,
    columns: int = 512,
    body_part: str = "ABDOMEN",
    manufacturer: tuple[str, str] = _MANUFACTURERS[0],
    slice_thickness: float = 2.0,
    accession_number: str = "",
    series_description: str | None = None,
) -> list[Dataset]:
    """One CT or MR series of ``slices`` axial images with consistent geometry."""
    study_uid = study_instance_uid or generate_uid()
    series_uid = generate_uid()
    frame_of_reference = generate_uid()
    spacing = 0.7 if rows >= 256 else 2.0
    datasets = []
    for index in range(slices):
        ds = Dataset()
        sop_uid = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage if modality == "CT" else MRImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = sop_uid
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = study_date
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = "101500"
        ds.AccessionNumber = accession_number
        ds.Modality = modality
        ds.Manufacturer, ds.ManufacturerModelName = manufacturer
        ds.InstitutionName = "JIP Test Hospital"
        ds.ReferringPhysicianName = "Referrer^Rita"
        ds.StudyDescription = f"{modality} {body_part.title()}"
        ds.SeriesDescription = series_description or f"{body_part.title()} {slice_thickness:g}mm"
        ds.PatientName = patient.name
        ds.PatientID = patient.patient_id
        ds.PatientBirthDate = patient.birth_date
        ds.PatientSex = patient.sex
        ds.PatientAge = _age(patient.birth_date, study_date)
        ds.BodyPartExamined = body_part
        ds.SliceThickness = slice_thickness
        if modality == "CT":
            ds.KVP = 120
            ds.ConvolutionKernel = "B30f"
        else:
            ds.MagneticFieldStrength = 3
            ds.ScanningSequence = "SE"
            ds.SequenceVariant = "SK"
            ds.RepetitionTime = 500
            ds.EchoTime = 15
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = "1"
        ds.SeriesNumber = series_number
        ds.InstanceNumber = index + 1
        ds.ImagePositionPatient = [
            -columns * spacing / 2,
            -rows * spacing / 2,
            -index * slice_thickness,
        ]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.FrameOfReferenceUID = frame_of_reference
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = -index * slice_thickness
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = rows, columns
        ds.PixelSpacing = [spacing, spacing]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
        ds.PixelRepresentation = 0
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.RescaleType = "HU" if modality == "CT" else "US"
        ds.WindowCenter, ds.WindowWidth = 40, 400
        ds.PixelData = _pattern(rows, columns, index).tobytes()
        datasets.append(ds)
    return datasets


def synthetic_site(
    *,
    patients: int = 4,
    studies_per_patient: int = 2,
    series_per_study: int = 2,
    slices: int = 5,
    rows: int = 64,
    columns: int = 64,
    seed: int = 0,
) -> list[Dataset]:
    """A multi-patient, multi-study CT/MR collection with varied, realistic headers."""
    rng = random.Random(seed)
    result: list[Dataset] = []
    for p in range(patients):
        patient = random_patient(rng, p)
        for s in range(studies_per_patient):
            study_uid = generate_uid()
            study_date = (dt.date(2018, 1, 1) + dt.timedelta(days=rng.randrange(0, 2500))).strftime(
                "%Y%m%d"
            )
            body_part = rng.choice(_BODY_PARTS)
            modality = "CT" if (p + s) % 3 != 2 else "MR"
            for k in range(series_per_study):
                result += image_series(
                    patient=patient,
                    modality=modality,
                    study_instance_uid=study_uid,
                    study_date=study_date,
                    series_number=k + 1,
                    slices=slices,
                    rows=rows,
                    columns=columns,
                    body_part=body_part,
                    manufacturer=rng.choice(_MANUFACTURERS),
                    slice_thickness=rng.choice([0.625, 1.0, 1.25, 2.0, 3.0, 5.0]),
                    accession_number=f"ACC{p:03d}{s:02d}",
                )
    return result


def write_datasets(datasets: Iterable[Dataset], directory: Path) -> list[Path]:
    """Write each dataset as a Part 10 file named by its SOP Instance UID."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for ds in datasets:
        path = directory / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def iter_files(directory: Path) -> Iterator[Path]:
    """DICOM files under ``directory``, in a stable order."""
    yield from sorted(p for p in directory.rglob("*.dcm") if p.is_file())
