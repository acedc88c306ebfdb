"""Series documents for tests and the benchmark.

:func:`make_series_docs` generates patients → studies → series with varied, seeded headers
(CT, MR, PT and SEG results that refer to their source series); :func:`extracted_docs`
builds documents through :mod:`jip.meta.extract` from pydicom's bundled test files, so
that extraction and the index are tested end to end.
"""

from __future__ import annotations

import io
import random
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from jip.meta.extract import read_summary, read_summary_bytes, series_document

MANUFACTURERS = {
    "SIEMENS": ["SOMATOM Force", "Skyra", "Biograph mCT"],
    "GE MEDICAL SYSTEMS": ["Revolution CT", "DISCOVERY MR750", "Discovery MI"],
    "Philips": ["IQon", "Ingenia"],
    "PHILIPS": ["Brilliance 64"],  # same company, other spelling: keywords are exact
    "Canon Medical Systems": ["Aquilion ONE", "Vantage Orian"],
}
BODY_PARTS = ["ABDOMEN", "CHEST", "HEAD", "PELVIS", "NECK", "LIVER"]
INSTITUTIONS = ["University Hospital Heidelberg", "DKFZ", "Klinikum rechts der Isar"]
STUDY_WORDS = {
    "CT": ["CT {part} W/O contrast", "CT {part} with contrast", "CT {part}-Pelvis",
           "Thorax nativ Übersicht"],
    "MR": ["MRI {part} 3T", "MR {part} T1/T2", "MRT {part} mit KM"],
    "PT": ["PET-CT {part} FDG", "PET {part} whole body"],
}
SERIES_WORDS = {
    "CT": ["AX {thick}mm", "Venous phase {thick}mm", "Arterial {part}", "cor MPR", "Lung kernel"],
    "MR": ["T1 AX post", "T2 FLAIR", "DWI b1000", "t1_mprage_sag", "T2-TSE cor"],
    "PT": ["PET AC", "PET NAC", "MIP"],
}
SEGMENT_LABELS = ["Liver", "Spleen", "Kidney", "Tumor", "Lung", "Brain"]


def make_series_docs(n: int = 400, seed: int = 7) -> list[dict[str, Any]]:
    """About ``n`` series documents; the same ``seed`` gives the same documents."""
    rng = random.Random(seed)
    docs: list[dict[str, Any]] = []
    patient = 0
    while len(docs) < n:
        patient += 1
        person = _patient(rng, patient)
        for _ in range(rng.choice([1, 1, 2, 3])):
            study = _study(rng, person)
            images: list[dict[str, Any]] = []
            for number in range(1, rng.choice([2, 3, 4]) + 1):
                images.append(_image_series(rng, study, number))
            docs.extend(images)
            if rng.random() < 0.25:
                docs.append(_segmentation(rng, study, rng.choice(images), len(images) + 1))
    return docs[:n]


def _uid(rng: random.Random) -> str:
    return "2.25." + str(rng.getrandbits(120))


def _patient(rng: random.Random, number: int) -> dict[str, Any]:
    person: dict[str, Any] = {"PatientID": f"P{number:05d}"}
    sex = rng.choice(["M", "F", "F", "M", "O", None])
    if sex:
        person["PatientSex"] = sex
    if rng.random() < 0.9:
        born = date(1925, 1, 1) + timedelta(days=rng.randrange(0, 365 * 95))
        person["PatientBirthDate"] = born.isoformat()
    return person


def _study(rng: random.Random, person: dict[str, Any]) -> dict[str, Any]:
    modality = rng.choices(["CT", "MR", "PT"], weights=[5, 4, 1])[0]
    day = date(2010, 1, 1) + timedelta(days=rng.randrange(0, 365 * 15))
    part = rng.choice(BODY_PARTS)
    manufacturer = rng.choice(list(MANUFACTURERS))
    study = dict(person) | {
        "StudyInstanceUID": _uid(rng),
        "StudyDate": day.isoformat(),
        "AccessionNumber": f"A{rng.randrange(10**7):07d}",
        "InstitutionName": rng.choice(INSTITUTIONS),
        "StudyDescription": rng.choice(STUDY_WORDS[modality]).format(part=part.title()),
        "Modality": modality,
        "BodyPartExamined": part,
        "Manufacturer": manufacturer,
        "ManufacturerModelName": rng.choice(MANUFACTURERS[manufacturer]),
    }
    born = person.get("PatientBirthDate")
    if born is not None and day.isoformat() > born:
        years = (day - date.fromisoformat(born)).days // 365
        if rng.random() < 0.05:
            study["PatientAge"] = f"{rng.randrange(1, 11):03d}M"
            study["PatientAgeYears"] = round(int(study["PatientAge"][:3]) / 12, 3)
        else:
            study["PatientAge"] = f"{years:03d}Y"
            study["PatientAgeYears"] = float(years)
    if rng.random() < 0.1:  # unknown body part: the field is missing, not empty
        del study["BodyPartExamined"]
    return study


def _image_series(rng: random.Random, study: dict[str, Any], number: int) -> dict[str, Any]:
    modality = study["Modality"]
    thickness = rng.choice([0.625, 1.0, 1.25, 2.0, 2.5, 3.0, 3.0, 5.0, 6.0])
    doc = dict(study) | {
        "SeriesInstanceUID": _uid(rng),
        "SeriesNumber": number,
        "SeriesDescription": rng.choice(SERIES_WORDS[modality]).format(
            thick=thickness, part=study.get("BodyPartExamined", "body").lower()
        ),
        "SOPClassUID": {"CT": "1.2.840.10008.5.1.4.1.1.2", "MR": "1.2.840.10008.5.1.4.1.1.4",
                        "PT": "1.2.840.10008.5.1.4.1.1.128"}[modality],
        "SliceThickness": thickness,
        "PixelSpacing": [s := rng.choice([0.4, 0.5, 0.7, 0.9765625, 4.0]), s],
        "Rows": rng.choice([256, 512]),
        "Columns": rng.choice([256, 512]),
        "ImageType": rng.choice([["ORIGINAL", "PRIMARY", "AXIAL"], ["DERIVED", "SECONDARY"],
                                 ["ORIGINAL", "PRIMARY", "LOCALIZER"]]),
        "NumberOfInstances": (count := rng.randrange(1, 600)),
        "NumberOfFrames": count,
        "TotalBytes": count * rng.choice([525_000, 4_000_000, 9_000_000]),
        "Contrast": rng.random() < 0.4,
    }
    if modality == "MR":
        doc["MagneticFieldStrength"] = rng.choice([1.5, 3.0, 3.0, 7.0])
        doc["ScanningSequence"] = rng.choice([["SE"], ["GR"], ["SE", "IR"], ["EP"]])
        doc["EchoTime"] = round(rng.uniform(2, 120), 2)
    if modality == "PT":
        doc["Radiopharmaceutical"] = rng.choice(["Fluorodeoxyglucose", "PSMA-11"])
        del doc["Contrast"]
    if rng.random() < 0.05:
        del doc["SliceThickness"]
    return doc


def _segmentation(
    rng: random.Random, study: dict[str, Any], source: dict[str, Any], number: int
) -> dict[str, Any]:
    doc = {k: v for k, v in study.items() if k not in ("Manufacturer", "ManufacturerModelName")}
    return doc | {
        "SeriesInstanceUID": _uid(rng),
        "Modality": "SEG",
        "SeriesNumber": number,
        "SeriesDescription": rng.choice(["TotalSegmentator", "Liver Segmentation", "nnU-Net"]),
        "Manufacturer": "JIP",
        "SOPClassUID": "1.2.840.10008.5.1.4.1.1.66.4",
        "ReferencedSeriesInstanceUID": [source["SeriesInstanceUID"]],
        "SegmentLabels": rng.sample(SEGMENT_LABELS, rng.randrange(1, 4)),
        "NumberOfInstances": 1,
        "NumberOfFrames": rng.randrange(1, 300),
        "TotalBytes": rng.randrange(10_000, 5_000_000),
    }


# --- through extract.py, from real headers -------------------------------------------


def extracted_docs() -> list[dict[str, Any]]:
    """Series documents made by extract.py from pydicom's test files and an SR built here."""
    docs = [series_document([read_summary(_testfile(name))])
            for name in ("MR_small.dcm", "liver.dcm", "emri_small.dcm")]
    docs.append(series_document(ct_series_summaries(3)))
    docs.append(series_document([read_summary_bytes(sr_bytes(docs[0]["SeriesInstanceUID"]))]))
    return docs


def _testfile(name: str) -> Path:
    return Path(str(get_testdata_file(name)))


def ct_series_summaries(count: int) -> list[dict[str, Any]]:
    """``count`` instances of one CT series made from CT_small.dcm, numbered 1..count."""
    summaries = []
    for number in range(count, 0, -1):
        dataset = pydicom.dcmread(_testfile("CT_small.dcm"))
        dataset.SOPInstanceUID = f"{dataset.SOPInstanceUID}.{number}"
        dataset.InstanceNumber = number
        dataset.BodyPartExamined = "ABDOMEN"
        dataset.SeriesDescription = "Abdomen venous 5.0mm"
        dataset.PatientAge = "058Y"
        if number == 2:
            dataset.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "CT_SOM5 SPI"]
        summaries.append(read_summary_bytes(encode(dataset)))
    return summaries


def encode(dataset: Dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def sr_bytes(referenced_series_uid: str) -> bytes:
    """A minimal Comprehensive SR whose evidence names ``referenced_series_uid``."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.88.33")
    uid = [generate_uid(entropy_srcs=[referenced_series_uid, part]) for part in "ISTE"]
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid[0]
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uid[1], uid[2]
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "SR", 900, 1
    ds.PatientID, ds.PatientSex, ds.PatientBirthDate = "SR-PATIENT", "F", "19600305"
    ds.StudyDate, ds.SeriesDescription = "20230304", "Radiomics report"
    ds.Manufacturer = "JIP"
    evidence_series = Dataset()
    evidence_series.SeriesInstanceUID = referenced_series_uid
    evidence = Dataset()
    evidence.StudyInstanceUID = uid[3]
    evidence.ReferencedSeriesSequence = Sequence([evidence_series])
    ds.CurrentRequestedProcedureEvidenceSequence = Sequence([evidence])
    return encode(ds)
