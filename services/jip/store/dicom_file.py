"""Reading and checking one received DICOM Part 10 file, without touching pixel data.

pydicom parses a truncated dataset without raising, so :func:`read_instance` checks that
the file ends exactly where its last element says it does (PS3.5 §7.1) before anything
is stored. UIDs become storage keys and URL segments, so they are checked against the
PS3.5 §9.1 grammar: a path-like "UID" never reaches the disk.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from jip.errors import Invalid

_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
_UNDEFINED_LENGTH = 0xFFFFFFFF
PIXEL_DATA_TAGS = {0x7FE00010, 0x7FE00008, 0x7FE00009}


def check_uid(value: object, keyword: str) -> str:
    """A UID as PS3.5 §9.1 allows it (digits and dots, ≤ 64 chars), else :class:`Invalid`."""
    text = str(value or "").strip().rstrip("\x00")
    if not text:
        raise Invalid(f"{keyword} is missing")
    if len(text) > 64 or not _UID.match(text):
        raise Invalid(f"{keyword} {text[:80]!r} is not a valid DICOM UID")
    return text


@dataclass(frozen=True)
class InstanceHeader:
    """The catalogued attributes of one instance (patient → study → series → instance)."""

    sop_instance_uid: str
    sop_class_uid: str
    series_instance_uid: str
    study_instance_uid: str
    transfer_syntax_uid: str
    patient_id: str = ""
    patient_name: str = ""
    patient_birth_date: str = ""
    patient_sex: str = ""
    study_date: str = ""
    study_time: str = ""
    accession_number: str = ""
    study_id: str = ""
    study_description: str = ""
    referring_physician_name: str = ""
    modality: str = ""
    series_number: int | None = None
    series_description: str = ""
    body_part_examined: str = ""
    performed_procedure_step_start_date: str = ""
    performed_procedure_step_start_time: str = ""
    instance_number: int | None = None
    rows: int | None = None
    columns: int | None = None
    bits_allocated: int | None = None
    number_of_frames: int | None = None
    specific_character_set: str = ""


def read_instance(path: Path) -> tuple[InstanceHeader, Dataset]:
    """Parse and check the file at ``path``; :class:`Invalid` names what is wrong."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        return _read(handle, size)


def read_instance_bytes(data: bytes) -> tuple[InstanceHeader, Dataset]:
    """As :func:`read_instance`, for bytes already in memory (STOW-RS parts)."""
    return _read(io.BytesIO(data), len(data))


def _read(handle: BinaryIO, size: int) -> tuple[InstanceHeader, Dataset]:
    if size < 132:
        raise Invalid(f"not a DICOM file: only {size} bytes")
    try:
        with warnings.catch_warnings():
            # pydicom only warns on a missing sequence delimiter at end of file.
            warnings.simplefilter("error")
            dataset = pydicom.dcmread(handle, defer_size=1024)
    except InvalidDicomError as exc:
        raise Invalid(f"not a DICOM Part 10 file: {exc}") from exc
    except Exception as exc:
        raise Invalid(f"cannot parse DICOM file: {exc}") from exc
    if not dataset._dict:
        raise Invalid("DICOM file holds no dataset")
    transfer_syntax = dataset.file_meta.get("TransferSyntaxUID")
    check_uid(transfer_syntax, "TransferSyntaxUID")
    if transfer_syntax != DeflatedExplicitVRLittleEndian:  # zlib already checks deflate
        _check_complete(handle, dataset, size)
    try:
        return _header(dataset), dataset
    except Invalid:
        raise
    except Exception as exc:
        raise Invalid(f"cannot decode DICOM header: {exc}") from exc


def _check_complete(handle: BinaryIO, dataset: Dataset, size: int) -> None:
    """The last top-level element must end exactly at the end of the file."""
    last_tag = max(dataset._dict)
    last = dataset._dict[last_tag]
    if not isinstance(last, RawDataElement):
        return
    undefined = last.length in (_UNDEFINED_LENGTH, 0) and last_tag in PIXEL_DATA_TAGS
    if undefined and UID(dataset.file_meta.TransferSyntaxUID).is_encapsulated:
        handle.seek(size - len(_SEQUENCE_DELIMITER))
        if handle.read(len(_SEQUENCE_DELIMITER)) != _SEQUENCE_DELIMITER:
            raise Invalid("truncated DICOM file: encapsulated pixel data has no end delimiter")
        return
    if last.length == _UNDEFINED_LENGTH:
        return  # an undefined-length sequence was read to its delimiter
    end = last.value_tell + last.length
    if end != size:
        raise Invalid(
            f"truncated DICOM file: element {last_tag:08X} ends at byte {end}, file has {size}"
        )


def _text(dataset: Dataset, keyword: str) -> str:
    value = dataset.get(keyword)
    if value is None:
        return ""
    if isinstance(value, list | pydicom.multival.MultiValue):
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def _int(dataset: Dataset, keyword: str) -> int | None:
    value = dataset.get(keyword)
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _header(dataset: Dataset) -> InstanceHeader:
    meta = dataset.file_meta
    sop_instance_uid = check_uid(dataset.get("SOPInstanceUID"), "SOPInstanceUID")
    return InstanceHeader(
        sop_instance_uid=sop_instance_uid,
        sop_class_uid=check_uid(dataset.get("SOPClassUID"), "SOPClassUID"),
        series_instance_uid=check_uid(dataset.get("SeriesInstanceUID"), "SeriesInstanceUID"),
        study_instance_uid=check_uid(dataset.get("StudyInstanceUID"), "StudyInstanceUID"),
        transfer_syntax_uid=str(meta.TransferSyntaxUID),
        patient_id=_text(dataset, "PatientID"),
        patient_name=_text(dataset, "PatientName"),
        patient_birth_date=_text(dataset, "PatientBirthDate"),
        patient_sex=_text(dataset, "PatientSex"),
        study_date=_text(dataset, "StudyDate"),
        study_time=_text(dataset, "StudyTime"),
        accession_number=_text(dataset, "AccessionNumber"),
        study_id=_text(dataset, "StudyID"),
        study_description=_text(dataset, "StudyDescription"),
        referring_physician_name=_text(dataset, "ReferringPhysicianName"),
        modality=_text(dataset, "Modality"),
        series_number=_int(dataset, "SeriesNumber"),
        series_description=_text(dataset, "SeriesDescription"),
        body_part_examined=_text(dataset, "BodyPartExamined"),
        performed_procedure_step_start_date=_text(dataset, "PerformedProcedureStepStartDate"),
        performed_procedure_step_start_time=_text(dataset, "PerformedProcedureStepStartTime"),
        instance_number=_int(dataset, "InstanceNumber"),
        rows=_int(dataset, "Rows"),
        columns=_int(dataset, "Columns"),
        bits_allocated=_int(dataset, "BitsAllocated"),
        number_of_frames=_int(dataset, "NumberOfFrames") or (1 if "Rows" in dataset else None),
        specific_character_set=_text(dataset, "SpecificCharacterSet"),
    )


BULK_DATA_THRESHOLD = 1024


def header_json(dataset: Dataset) -> dict[str, Any]:
    """The dataset as DICOM JSON (PS3.18 F.2) without pixel data.

    Large binary values become ``BulkDataURI: "bulk:<tag>"`` placeholders that DICOMweb
    turns into absolute URLs. Not computed at ingest (it costs more than the rest of the
    parse); DICOMweb fills the catalog's cache on first use.
    """
    header = Dataset()
    for element in dataset:
        if element.tag in PIXEL_DATA_TAGS:
            continue
        header.add(element)

    def bulk(element: Any) -> str:
        return f"bulk:{int(element.tag):08X}"

    result: dict[str, Any] = header.to_json_dict(BULK_DATA_THRESHOLD, bulk)
    for tag in PIXEL_DATA_TAGS:
        if tag in dataset:
            result[f"{tag:08X}"] = {"vr": _pixel_vr(dataset, tag), "BulkDataURI": f"bulk:{tag:08X}"}
    return result


def _pixel_vr(dataset: Dataset, tag: int) -> str:
    """The pixel data VR; implicit-VR files leave it to be inferred (PS3.5 §8.2)."""
    vr = getattr(dataset._dict.get(tag), "VR", None)
    if vr in ("OB", "OW", "OF", "OD"):
        return str(vr)
    return "OW" if (dataset.get("BitsAllocated") or 8) > 8 else "OB"
