"""Reading and checking one received DICOM Part 10 file, without touching pixel data.

pydicom parses a truncated dataset without raising, so every reader here first checks
that the file ends exactly where its last element says it does (PS3.5 §7.1), in the
same pass that picks up the catalogued values (:mod:`jip.store.dicom_header`). UIDs
become storage keys and URL segments, so they are checked against the PS3.5 §9.1
grammar: a path-like "UID" never reaches the disk.

The ingest path (:func:`read_header`) builds no pydicom Dataset: plain ASCII values are
decoded here, exactly as pydicom would; anything else (another character set, a VR
other than the dictionary's, odd numbers) is handed to pydicom itself.
"""

from __future__ import annotations

import contextlib
import io
import mmap
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID

from jip.errors import Invalid
from jip.store.dicom_header import Scan, scan
from jip.store.dicom_header import check_uid as check_uid
from jip.store.dicom_json import dataset_json

PIXEL_DATA_TAGS = {0x7FE00010, 0x7FE00008, 0x7FE00009}


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
    institution_name: str = ""  # for project assignment rules, not catalogued


# The catalogued top-level attributes, in the order the pydicom reading checks them.
_UID_FIELDS = {
    0x00080018: "sop_instance_uid",
    0x00080016: "sop_class_uid",
    0x0020000E: "series_instance_uid",
    0x0020000D: "study_instance_uid",
}
_TEXT_FIELDS = {
    0x00100020: "patient_id",
    0x00100010: "patient_name",
    0x00100030: "patient_birth_date",
    0x00100040: "patient_sex",
    0x00080020: "study_date",
    0x00080030: "study_time",
    0x00080050: "accession_number",
    0x00200010: "study_id",
    0x00081030: "study_description",
    0x00080090: "referring_physician_name",
    0x00080060: "modality",
    0x0008103E: "series_description",
    0x00180015: "body_part_examined",
    0x00400244: "performed_procedure_step_start_date",
    0x00400245: "performed_procedure_step_start_time",
    0x00080005: "specific_character_set",
    0x00080080: "institution_name",
}
_INT_FIELDS = {
    0x00200011: "series_number",
    0x00200013: "instance_number",
    0x00280010: "rows",
    0x00280011: "columns",
    0x00280100: "bits_allocated",
    0x00280008: "number_of_frames",
}
_ROWS = 0x00280010  # present at all: an image, one frame unless NumberOfFrames says more
_WANTED = frozenset(_UID_FIELDS) | frozenset(_TEXT_FIELDS) | frozenset(_INT_FIELDS)
_VR = {tag: dictionary_VR(tag).encode("ascii") for tag in _WANTED}
_TEXTS = [(tag, name, _VR[tag]) for tag, name in _TEXT_FIELDS.items()]
_KEYWORD = {tag: keyword_for_tag(tag) for tag in _WANTED}
# Bytes every character set pydicom knows decodes as ASCII (no ESC, no 8-bit codes).
_PLAIN = bytes(range(0x20, 0x7F)) + b"\x00"
_DIGITS = frozenset(b"0123456789")
# Files up to this size are read into memory; larger ones are mapped, page by page.
_MAP_FROM = 1024 * 1024


class _NotPlain(Exception):
    """A value only pydicom can decode exactly as pydicom does."""


def read_header(path: Path) -> InstanceHeader:
    """Check the file at ``path`` and return its header; :class:`Invalid` names what is wrong."""
    with open_part10(path) as data:
        return header_of(data, path)


def read_header_bytes(data: bytes) -> InstanceHeader:
    """As :func:`read_header`, for bytes already in memory (STOW-RS parts)."""
    return header_of(data, data)


def header_of(data: Any, source: Path | bytes) -> InstanceHeader:
    """The header of the Part 10 file held in ``data`` (bytes or an mmap of ``source``).

    pydicom reads ``source`` itself where only it can tell what the values are (odd files).
    """
    found = scan(data, _WANTED)
    if found.odd is not None:
        return _read_pydicom(source)[0]
    if not found.top_level_count:
        raise Invalid("DICOM file holds no dataset")
    try:
        return _header_of_scan(found)
    except _NotPlain:
        return _decoded(_dataset_of_scan(found))


@contextlib.contextmanager
def open_part10(path: Path) -> Iterator[Any]:
    """The file's bytes: small files read at once, large ones mapped.

    A mapping keeps memory flat for a 500 MB instance (DESIGN, "Facts about DICOM
    ingest"): the header walk touches only element headers, and pages are file-backed.
    """
    with path.open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size < _MAP_FROM:
            yield handle.read()
            return
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            yield mapped


def read_instance(path: Path) -> tuple[InstanceHeader, Dataset]:
    """As :func:`read_header`, plus the dataset as pydicom reads it (no pixel data)."""
    with open_part10(path) as data:
        scan(data, _WANTED)
    return _read_pydicom(path)


def read_instance_bytes(data: bytes) -> tuple[InstanceHeader, Dataset]:
    """As :func:`read_instance`, for bytes already in memory."""
    scan(data, _WANTED)
    return _read_pydicom(data)


def _read_pydicom(source: Path | bytes) -> tuple[InstanceHeader, Dataset]:
    """pydicom's reading of a file whose structure :func:`scan` has checked.

    Deferred values are read later from ``source``: a path is reopened by name, and the
    in-memory stream is left open for that.
    """
    try:
        dataset = pydicom.dcmread(
            io.BytesIO(source) if isinstance(source, bytes) else source, defer_size=1024
        )
    except InvalidDicomError as exc:
        raise Invalid(f"not a DICOM Part 10 file: {exc}") from exc
    except Exception as exc:
        raise Invalid(f"cannot parse DICOM file: {exc}") from exc
    if not dataset._dict:
        raise Invalid("DICOM file holds no dataset")
    return _decoded(dataset), dataset


def _decoded(dataset: Dataset) -> InstanceHeader:
    try:
        return _header(dataset)
    except Invalid:
        raise
    except Exception as exc:
        raise Invalid(f"cannot decode DICOM header: {exc}") from exc


def _header_of_scan(found: Scan) -> InstanceHeader:
    """The header from plain values, decoded as pydicom would; :class:`_NotPlain` else."""
    values = found.values
    fields: dict[str, Any] = {"transfer_syntax_uid": found.transfer_syntax_uid}
    for tag, name in _UID_FIELDS.items():
        text = _plain(values, tag)
        fields[name] = check_uid(text and text.rstrip("\0 "), _KEYWORD[tag])
    for tag, name, vr in _TEXTS:
        entry = values.get(tag)
        if entry is None or not entry[1]:
            fields[name] = ""
            continue
        if (entry[0] is not None and entry[0] != vr) or entry[1].translate(None, _PLAIN):
            raise _NotPlain(tag)
        text = entry[1].decode("ascii")
        if vr == b"PN" and "=" in text:
            raise _NotPlain(tag)  # ideographic/phonetic groups: pydicom's turn
        if vr in (b"SH", b"LO") and "\\" in text:  # pydicom strips each value
            text = "\\".join(value.rstrip("\0 ") for value in text.split("\\"))
        fields[name] = text.replace("\x00", "").strip()
    for tag, name in _INT_FIELDS.items():
        fields[name] = _number(values, tag, found.little)
    fields["number_of_frames"] = fields["number_of_frames"] or (1 if _ROWS in values else None)
    return InstanceHeader(**fields)


def _plain(values: dict[int, tuple[bytes | None, bytes]], tag: int) -> str:
    """The value as text where every character set decodes it alike; "" when absent."""
    entry = values.get(tag)
    if entry is None:
        return ""
    vr, raw = entry
    if vr is not None and vr != _VR[tag]:
        raise _NotPlain(tag)
    if raw.translate(None, _PLAIN):
        raise _NotPlain(tag)
    text = raw.decode("ascii")
    # Several UIDs, or a person name with ideographic/phonetic groups: pydicom's turn.
    if ("\\" in text and _VR[tag] == b"UI") or ("=" in text and _VR[tag] == b"PN"):
        raise _NotPlain(tag)
    return text


def _number(values: dict[int, tuple[bytes | None, bytes]], tag: int, little: bool) -> int | None:
    entry = values.get(tag)
    if entry is None or not entry[1]:
        return None
    vr, raw = entry
    if _VR[tag] == b"US":
        if (vr is not None and vr != b"US") or len(raw) != 2:
            raise _NotPlain(tag)
        return int.from_bytes(raw, "little" if little else "big")
    text = _plain(values, tag).rstrip(" \x00")
    digits = text.lstrip(" ")
    digits = digits[1:] if digits[:1] in ("+", "-") else digits
    if not text:
        return None
    if not digits or not _DIGITS.issuperset(digits.encode("ascii")):
        raise _NotPlain(tag)
    number = int(text)
    return number if -(2**31) <= number < 2**31 else None


def _dataset_of_scan(found: Scan) -> Dataset:
    """A Dataset of just the captured raw elements: pydicom decodes them as in the file."""
    raw: dict[BaseTag, DataElement | RawDataElement] = {}
    for tag, (vr, value) in found.values.items():
        key = BaseTag(tag)
        raw[key] = RawDataElement(
            key,
            vr.decode("latin-1") if vr is not None else None,
            len(value),
            value,
            0,
            found.implicit,
            found.little,
        )
    dataset = Dataset(raw)
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = UID(found.transfer_syntax_uid)
    return dataset


def _text(dataset: Dataset, keyword: str) -> str:
    value = dataset.get(keyword)
    if value is None:
        return ""
    if isinstance(value, list | pydicom.multival.MultiValue):
        text = "\\".join(str(v) for v in value)
    else:
        text = str(value).strip()
    # NUL padding (seen from some modalities) cannot be stored in PostgreSQL text.
    return text.replace("\x00", "").strip()


def _int(dataset: Dataset, keyword: str) -> int | None:
    value = dataset.get(keyword)
    try:
        number = int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None
    # IS is a 32-bit signed integer (PS3.5 §6.2); anything else would fail the catalog
    # row, and with it every instance committed in the same batch.
    return number if number is not None and -(2**31) <= number < 2**31 else None


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
        institution_name=_text(dataset, "InstitutionName"),
    )


BULK_DATA_THRESHOLD = 1024


def header_json(dataset: Dataset) -> dict[str, Any]:
    """The dataset as DICOM JSON (PS3.18 F.2) without pixel data; invalid values are
    returned as stored or left out (:mod:`jip.store.dicom_json`), never an error.

    Large binary values become ``BulkDataURI: "bulk:<tag>"`` placeholders that DICOMweb
    turns into absolute URLs. Not computed at ingest (it costs more than the rest of the
    parse); DICOMweb fills the catalog's cache on first use.
    """

    def bulk(element: Any) -> str:
        return f"bulk:{int(element.tag):08X}"

    # Element by element, so that one invalid value cannot fail the rest (dicom_json).
    result = dataset_json(dataset, BULK_DATA_THRESHOLD, bulk, frozenset(PIXEL_DATA_TAGS))
    for tag in PIXEL_DATA_TAGS:
        if tag in dataset:
            result[f"{tag:08X}"] = {"vr": _pixel_vr(dataset, tag), "BulkDataURI": f"bulk:{tag:08X}"}
    return result


def _pixel_vr(dataset: Dataset, tag: int) -> str:
    """The pixel data VR; implicit-VR files leave it to be inferred (PS3.5 §8.2)."""
    vr = getattr(dataset._dict.get(Tag(tag)), "VR", None)
    if vr in ("OB", "OW", "OF", "OD"):
        return str(vr)
    return "OW" if (dataset.get("BitsAllocated") or 8) > 8 else "OB"
