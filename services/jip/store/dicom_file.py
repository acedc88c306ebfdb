"""Reading and checking one received DICOM Part 10 file, without touching pixel data.

pydicom parses a truncated dataset without raising, so :func:`read_instance` checks that
the file ends exactly where its last element says it does (PS3.5 §7.1) before anything
is stored. UIDs become storage keys and URL segments, so they are checked against the
PS3.5 §9.1 grammar: a path-like "UID" never reaches the disk.
"""

from __future__ import annotations

import io
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.tag import Tag
from pydicom.uid import UID

from jip.errors import Invalid

_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
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
    institution_name: str = ""  # for project assignment rules, not catalogued


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
    handle.seek(128)
    if handle.read(4) != b"DICM":
        raise Invalid("not a DICOM Part 10 file: no 'DICM' prefix at byte 128 (PS3.10 §7.1)")
    # pydicom reads a cut file with at most a warning, and warning filters are
    # process-wide (useless on the listener's threads): walk the element structure first.
    _check_complete(handle, size)
    handle.seek(0)
    try:
        dataset = pydicom.dcmread(handle, defer_size=1024)
    except InvalidDicomError as exc:
        raise Invalid(f"not a DICOM Part 10 file: {exc}") from exc
    except Exception as exc:
        raise Invalid(f"cannot parse DICOM file: {exc}") from exc
    if not dataset._dict:
        raise Invalid("DICOM file holds no dataset")
    try:
        return _header(dataset), dataset
    except Invalid:
        raise
    except Exception as exc:
        raise Invalid(f"cannot decode DICOM header: {exc}") from exc


def _check_complete(handle: BinaryIO, size: int) -> None:
    """Every element, item and delimiter is whole, and the last one ends at end of file."""
    handle.seek(132)
    meta = _ElementWalker(handle, size, implicit=False, little=True)
    syntax_value: bytes | None = None
    while handle.tell() < size and meta.peek_group() == 0x0002:
        at = handle.tell()
        if meta.element() == 0x00020010:  # Transfer Syntax UID, a short-VR element
            end = handle.tell()
            handle.seek(at + 8)
            syntax_value = handle.read(end - at - 8)
    start = handle.tell()
    if start == 132:
        raise Invalid("not a DICOM Part 10 file: no File Meta Information after 'DICM'")
    syntax = UID(
        check_uid(syntax_value and syntax_value.decode("ascii", "replace"), "TransferSyntaxUID")
    )
    try:
        implicit = syntax.is_implicit_VR
        little = syntax.is_little_endian
        deflated = syntax.is_deflated
    except ValueError:  # a private transfer syntax: explicit VR little endian (PS3.5 §10)
        implicit, little, deflated = False, True, False
    if deflated:
        handle = _inflate(handle, start)
        size, start = len(handle.getbuffer()), 0
    walker = _ElementWalker(handle, size, implicit=implicit, little=little)
    handle.seek(start)
    walker.implicit = walker.found_implicit(implicit)
    while handle.tell() < size:
        walker.element()


def _inflate(handle: BinaryIO, start: int) -> io.BytesIO:
    """The deflated dataset (PS3.5 §A.5); a cut deflate stream is :class:`Invalid`."""
    handle.seek(start)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    out = io.BytesIO()
    try:
        while not inflater.eof and (chunk := handle.read(1024 * 1024)):
            out.write(inflater.decompress(chunk))
    except zlib.error as exc:
        raise Invalid(f"corrupt deflated DICOM dataset: {exc}") from exc
    if not inflater.eof:
        raise Invalid("truncated DICOM file: the deflated dataset ends early")
    return out


_ITEM = 0xFFFEE000
_ITEM_DELIMITER = 0xFFFEE00D
_SEQUENCE_DELIMITER = 0xFFFEE0DD
# Explicit VRs with a reserved field and a 4-byte length (PS3.5 §7.1.2).
_LONG_VRS = frozenset(
    (b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV")
)


class _ElementWalker:
    """Steps over element headers (PS3.5 §7.1, §7.5) without reading any value."""

    def __init__(self, handle: BinaryIO, size: int, *, implicit: bool, little: bool) -> None:
        self.handle = handle
        self.size = size
        self.implicit = implicit
        self.order = "<" if little else ">"

    def _read(self, count: int) -> bytes:
        at = self.handle.tell()
        data = self.handle.read(count)
        if len(data) < count:
            raise Invalid(
                f"truncated DICOM file: ends at byte {self.size} inside the element "
                f"header at byte {at}"
            )
        return data

    def _skip(self, length: int, tag: int) -> None:
        end = self.handle.tell() + length
        if end > self.size:
            raise Invalid(
                f"truncated DICOM file: element {tag:08X} ends at byte {end}, file has {self.size}"
            )
        self.handle.seek(end)

    def found_implicit(self, implicit: bool) -> bool:
        """Whether the dataset starting here is implicit VR.

        pydicom reads a dataset whose VR encoding contradicts its transfer syntax (it
        looks at the first element), so the structure check does the same.
        """
        at = self.handle.tell()
        head = self.handle.read(6)
        self.handle.seek(at)
        if implicit or len(head) < 6:
            return implicit
        (group,) = struct.unpack(self.order + "H", head[:2])
        if group == 0xFFFE:  # an empty item
            return implicit
        return not (head[4:5].isupper() and head[5:6].isupper())

    def peek_group(self) -> int:
        at = self.handle.tell()
        group: int = struct.unpack(self.order + "H", self._read(2))[0]
        self.handle.seek(at)
        return group

    def element(self, implicit: bool | None = None) -> int:
        """Step over one element, recursing into undefined-length values; its tag."""
        implicit = self.implicit if implicit is None else implicit
        group, number = struct.unpack(self.order + "HH", self._read(4))
        tag = (group << 16) | number
        vr = b""
        if implicit or group == 0xFFFE:  # items and delimiters carry no VR (PS3.5 §7.5)
            (length,) = struct.unpack(self.order + "L", self._read(4))
        else:
            vr = self._read(2)
            if vr in _LONG_VRS:
                (length,) = struct.unpack(self.order + "2xL", self._read(6))
            else:
                (length,) = struct.unpack(self.order + "H", self._read(2))
        if length != _UNDEFINED_LENGTH:
            self._skip(length, tag)
        elif group != 0xFFFE:
            # SQ, encapsulated pixel data, or UN holding implicit VR items (PS3.5 §6.2.2)
            self._sequence(tag, implicit or vr == b"UN")
        return tag

    def _sequence(self, tag: int, implicit: bool) -> None:
        while True:
            group, number, length = struct.unpack(self.order + "HHL", self._read(8))
            item_tag = (group << 16) | number
            if item_tag == _SEQUENCE_DELIMITER:
                return
            if item_tag != _ITEM:
                raise Invalid(
                    f"malformed DICOM file: element {item_tag:08X} where sequence "
                    f"{tag:08X} needs an item"
                )
            if length != _UNDEFINED_LENGTH:
                self._skip(length, tag)
                continue
            item_implicit = self.found_implicit(implicit)
            while self.element(item_implicit) != _ITEM_DELIMITER:
                pass


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
    vr = getattr(dataset._dict.get(Tag(tag)), "VR", None)
    if vr in ("OB", "OW", "OF", "OD"):
        return str(vr)
    return "OW" if (dataset.get("BitsAllocated") or 8) > 8 else "OB"
