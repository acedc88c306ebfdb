"""From DICOM headers to series documents, never touching pixel data.

Two steps, so that the indexer can keep the small per-instance part (the catalog's
``header_json``) and rebuild a series document whenever an instance arrives:

1. :func:`instance_summary` (or :func:`read_summary` / :func:`read_summary_bytes`) reads
   the catalogue's fields from one instance header into a JSON-able dict, plus
   ``SOPInstanceUID``, ``InstanceNumber``, ``NumberOfFrames`` and ``FileSize``.
2. :func:`series_document` folds the summaries of one series into the flat series
   document the index stores: the first instance (by InstanceNumber, then UID) gives
   single values, multi-valued fields take the union, counts are summed, and the derived
   fields (``PatientAgeYears``, ``Contrast``) are computed.

Only fields of the catalogue (:mod:`jip.meta.fields`) are read, so private tags are never
indexed. An element whose value cannot be read (a DS that is not a number, a DA that is
not a date, an integer beyond 64 bits, text past 1024 characters, a sequence that holds
no items, a wrong VR) leaves its field out with a warning rather than failing the
instance: real archives are full of them. Text in an unknown character set is kept as
pydicom decodes it. Only an instance without a usable SOP or Series Instance UID fails.
"""

from __future__ import annotations

import io
import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import date
from functools import cache, partial
from pathlib import Path
from typing import Any

import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag

from jip.errors import Invalid
from jip.meta.diffusion import b_values
from jip.meta.fields import (
    FIELDS,
    ID_FIELD,
    INT64,
    Field,
    FieldType,
    normalize_document,
    parse_date,
)

log = logging.getLogger(__name__)

# Computed in series_document, never read from a header.
_DERIVED = {
    "PatientAgeYears",
    "Contrast",
    "NumberOfInstances",
    "NumberOfFrames",
    "TotalBytes",
    "ReferencedSeriesInstanceUID",
    "SegmentLabels",
    "Radiopharmaceutical",
    "DiffusionBValues",
}
_READ = [f for f in FIELDS.values() if f.name not in _DERIVED and tag_for_keyword(f.name)]
# Enhanced multi-frame objects (PS3.3 C.7.6.16) keep these in functional group macros.
_FUNCTIONAL = {
    "SliceThickness",
    "PixelSpacing",
    "SpacingBetweenSlices",
    "EchoTime",
    "RepetitionTime",
    "FlipAngle",
    "InversionTime",
    "ImageType",
}
_FUNCTIONAL_ALIASES = {"EchoTime": "EffectiveEchoTime", "ImageType": "FrameType"}
# Multi-valued fields that are one vector (row, column), taken whole from one instance.
_VECTORS = {"PixelSpacing"}
# Objects whose pixels (if any) are not an acquisition: "Contrast" means nothing for them.
_RESULT_MODALITIES = {"SEG", "SR", "RTSTRUCT", "RTDOSE", "RTPLAN", "KO", "PR", "DOC"}
_NO_CONTRAST = {"", "NONE", "NO", "N", "N/A", "NA", "0", "WITHOUT", "NIL"}
_AGE = re.compile(r"^\s*(\d{1,3})\s*([DWMY])\s*$")
_DAYS_PER_YEAR = 365.25
_DEFER_SIZE = 64 * 1024
MAX_TEXT = 1024  # characters of a string value (LO allows 64); longer ones are left out
MAX_VALUES = 1024  # values of a multi-valued field read from one instance
MAX_UID = 64  # PS3.5 9.1


def read_summary(path: Path) -> dict[str, Any]:
    """The summary of the instance stored at ``path``; :class:`Invalid` if unreadable."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            dataset = _parse(handle, defer_size=_DEFER_SIZE)
            return instance_summary(dataset, size)
    except OSError as exc:
        raise Invalid(f"cannot read DICOM file {path.name}: {exc}") from exc


def read_summary_bytes(data: bytes) -> dict[str, Any]:
    """The summary of one encoded instance (Part 10 file, or a bare dataset)."""
    return instance_summary(_parse(io.BytesIO(data), defer_size=None), len(data))


def instance_summary(dataset: Dataset, size: int) -> dict[str, Any]:
    """The catalogue's fields of one parsed instance header, as JSON values."""
    try:
        summary = _summary(dataset)
    except Invalid:
        raise
    except Exception as exc:  # pydicom decodes lazily: bad values surface here
        raise Invalid(f"cannot decode DICOM header: {exc}") from exc
    summary["FileSize"] = size
    return summary


def series_document(summaries: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Fold instance summaries of one series into its series document."""
    by_uid: dict[str, Mapping[str, Any]] = {}
    for summary in summaries:
        by_uid[str(summary.get("SOPInstanceUID", len(by_uid)))] = summary
    if not by_uid:
        raise Invalid("a series document needs at least one instance")
    ordered = sorted(by_uid.items(), key=_instance_order)
    series_uids = {s.get(ID_FIELD) for _, s in ordered}
    if len(series_uids) != 1:
        raise Invalid(f"instances of more than one series: {sorted(map(str, series_uids))}")
    doc: dict[str, Any] = {}
    for _, summary in ordered:
        for name, value in summary.items():
            field = FIELDS.get(name)
            if field is None or name == "NumberOfFrames":
                continue
            if field.multi and name not in _VECTORS:
                merged = doc.setdefault(name, [])
                merged.extend(v for v in value if v not in merged)
            else:
                doc.setdefault(name, value)
    if "DiffusionBValues" in doc:  # distinct over the instances; sorted, as b increases
        doc["DiffusionBValues"] = sorted(doc["DiffusionBValues"])
    summaries_only = [s for _, s in ordered]
    doc["NumberOfInstances"] = len(summaries_only)
    doc["NumberOfFrames"] = sum(int(s.get("NumberOfFrames") or 0) for s in summaries_only)
    doc["TotalBytes"] = sum(int(s.get("FileSize") or 0) for s in summaries_only)
    age = patient_age_years(doc.get("PatientAge"), doc.get("PatientBirthDate"), _on(doc))
    if age is not None:
        doc["PatientAgeYears"] = age
    contrast = _contrast(doc, summaries_only)
    if contrast is not None:
        doc["Contrast"] = contrast
    return normalize_document(doc)


def patient_age_years(age: object, birth_date: object, on: object) -> float | None:
    """Age in years from PatientAge (``045Y``, ``006M``, ``010W``, ``003D``, PS3.5 AS),
    else from the birth date and the study date (both ``yyyy-MM-dd``): completed years,
    or a fraction of a year for infants."""
    if isinstance(age, str):
        found = _AGE.match(age)
        if found:
            number, unit = int(found.group(1)), found.group(2)
            years = {"Y": number, "M": number / 12, "W": number * 7 / _DAYS_PER_YEAR}.get(
                unit, number / _DAYS_PER_YEAR
            )
            return round(float(years), 3)
    if not isinstance(birth_date, str) or not isinstance(on, str):
        return None
    born, seen = date.fromisoformat(birth_date), date.fromisoformat(on)
    if seen < born:
        return None
    completed = seen.year - born.year - ((seen.month, seen.day) < (born.month, born.day))
    if completed >= 1:
        return float(completed)
    return round((seen - born).days / _DAYS_PER_YEAR, 3)


def _parse(handle: io.BufferedIOBase | io.BytesIO, defer_size: int | None) -> Dataset:
    start = handle.tell()
    try:
        try:
            dataset = pydicom.dcmread(handle, stop_before_pixels=True, defer_size=defer_size)
        except InvalidDicomError:
            # A bare dataset without preamble and file meta (as sent over DIMSE).
            handle.seek(start)
            dataset = pydicom.dcmread(
                handle, stop_before_pixels=True, defer_size=defer_size, force=True
            )
        if ID_FIELD not in dataset:
            raise Invalid(f"not a DICOM instance: no {ID_FIELD}")
        return dataset
    except Invalid:
        raise
    except Exception as exc:
        raise Invalid(f"cannot parse DICOM header: {exc}") from exc


def _summary(dataset: Dataset) -> dict[str, Any]:
    summary: dict[str, Any] = {"SOPInstanceUID": _uid(dataset, "SOPInstanceUID")}
    summary[ID_FIELD] = _uid(dataset, ID_FIELD)
    readers: list[tuple[str, Callable[[], Any]]] = [
        ("InstanceNumber", partial(_single, dataset, "InstanceNumber", FieldType.INTEGER)),
        ("NumberOfFrames", partial(_single, dataset, "NumberOfFrames", FieldType.INTEGER)),
        *((f.name, partial(_read_field, dataset, f)) for f in _READ if f.name != ID_FIELD),
        ("ReferencedSeriesInstanceUID", partial(_referenced_series, dataset)),
        ("SegmentLabels", partial(_segment_labels, dataset)),
        ("Radiopharmaceutical", partial(_radiopharmaceutical, dataset)),
        ("DiffusionBValues", partial(b_values, dataset)),
    ]
    for name, read in readers:
        value = _guarded(name, read, summary["SOPInstanceUID"])
        if value not in (None, [], ""):
            summary[name] = value
    if "NumberOfFrames" not in summary:
        summary["NumberOfFrames"] = int(
            bool(_guarded("Rows", partial(dataset.__contains__, "Rows")))
        )
    return summary


def _guarded(name: str, read: Callable[[], Any], sop_uid: str = "") -> Any:
    """``read()``, or None with a warning when the element's value cannot be decoded or
    converted: one bad element leaves its field out, never the instance. pydicom decodes
    lazily, so any error (bad number, date, character set, sequence, length) shows here;
    the warning names the field and the error's kind, never the value (it may be PHI)."""
    try:
        return read()
    except Exception as exc:
        log.warning(
            "value left out",
            extra={"field": name, "sop_instance_uid": sop_uid, "error": type(exc).__name__},
        )
        return None


def _uid(dataset: Dataset, keyword: str) -> str:
    """An identifying UID; the instance cannot be indexed without it."""
    try:
        value = _text(_element_value(dataset, keyword))
    except Exception as exc:
        raise Invalid(f"DICOM header has no readable {keyword}: {type(exc).__name__}") from exc
    if not value:
        raise Invalid(f"DICOM header has no {keyword}")
    if len(value) > MAX_UID:
        raise Invalid(f"{keyword} is {len(value)} characters long; a UID has at most 64")
    return value


def _read_field(dataset: Dataset, field: Field) -> Any:
    raw = _element_value(dataset, field.name)
    if raw is None and field.name in _FUNCTIONAL:
        raw = _functional_value(dataset, _FUNCTIONAL_ALIASES.get(field.name, field.name))
        if raw is None and field.name in _FUNCTIONAL_ALIASES:
            raw = _functional_value(dataset, field.name)
    if raw is None:
        return None
    items = list(raw) if isinstance(raw, MultiValue | list | tuple) else [raw]
    if field.multi:
        if len(items) > MAX_VALUES:
            log.warning("values left out", extra={"field": field.name, "kept": MAX_VALUES})
            items = items[:MAX_VALUES]
        values = [_guarded(field.name, partial(_convert, field.type, item)) for item in items]
        return [v for v in values if v is not None]
    if field.type in (FieldType.KEYWORD, FieldType.TEXT) and len(items) > 1:
        return _convert(field.type, "\\".join(str(i) for i in items))
    return _convert(field.type, items[0]) if items else None


@cache
def _tag(keyword: str) -> BaseTag:
    return Tag(keyword)


def _element_value(dataset: Dataset, keyword: str) -> Any:
    """The value of ``keyword``'s element; None when absent, a sequence or bytes.

    By tag rather than ``dataset.get(keyword)``: most of the catalogue's fields are
    absent from any one instance, and pydicom answers an absent keyword with an
    exception (a third of the indexer's time went there)."""
    element = _get(dataset, keyword)
    if element is None or isinstance(element, Sequence | Dataset | bytes | bytearray):
        return None
    return element


def _get(dataset: Dataset, keyword: str) -> Any:
    tag = _tag(keyword)
    return dataset[tag].value if tag in dataset else None


def _items(value: Any) -> list[Dataset]:
    """The items of a sequence element; anything else (a wrong VR) has none."""
    return (
        [item for item in value if isinstance(item, Dataset)] if isinstance(value, Sequence) else []
    )


def _functional_value(dataset: Dataset, keyword: str) -> Any:
    """``keyword`` from the shared functional groups, else from the first frame's."""
    for groups in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        items = _items(_get(dataset, groups))
        if not items:
            continue
        for macro in items[0]:
            found = _items(macro.value) if macro.VR == "SQ" else []
            if found:
                value = _element_value(found[0], keyword)
                if value is not None:
                    return value
    return None


def _convert(ftype: FieldType, value: Any) -> Any:
    """``value`` as the JSON value of a field of type ``ftype``; None when empty.

    ValueError when it is not one: not a number (IS ``1A``), not finite, beyond 64 bits,
    not a date, or text longer than any of the catalogue's string VRs allow."""
    text = _text(value)
    if not text:
        return None
    match ftype:
        case FieldType.INTEGER:
            integer = int(float(text))
            if not -INT64 <= integer < INT64:
                raise ValueError("integer beyond 64 bits")
            return integer
        case FieldType.FLOAT:
            number = float(text)
            if not math.isfinite(number):
                raise ValueError("not a finite number")
            return number
        case FieldType.DATE:
            day = parse_date(text.replace(".", "")[:MAX_TEXT])
            if day is None:
                raise ValueError("not a date")
            return day
    if len(text) > MAX_TEXT:  # LO, the longest VR of the catalogue's strings, holds 64
        raise ValueError(f"text of {len(text)} characters")
    return text


def _text(value: Any) -> str:
    """The value as text, as stored (less padding); characters UTF-8 cannot hold (lone
    surrogates from a broken encoding) become U+FFFD, so that every index takes it."""
    if value is None:
        return ""
    text = str(value).strip(" \x00")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def _single(dataset: Dataset, keyword: str, ftype: FieldType) -> Any:
    value = _element_value(dataset, keyword)
    if isinstance(value, MultiValue):
        value = value[0] if len(value) else None
    return None if value is None else _convert(ftype, value)


def _items_text(items: Any, keyword: str) -> list[str]:
    values: list[str] = []
    for item in _items(items)[:MAX_VALUES]:
        text = _guarded(
            keyword, partial(_convert, FieldType.KEYWORD, _element_value(item, keyword))
        )
        if text and text not in values:
            values.append(text)
    return values


def _segment_labels(dataset: Dataset) -> list[str]:
    return _items_text(_get(dataset, "SegmentSequence"), "SegmentLabel")


def _referenced_series(dataset: Dataset) -> list[str]:
    """Series this object refers to: a SEG's Common Instance Reference module (PS3.3
    C.12.2), an SR's evidence sequences (PS3.3 C.17.2)."""
    uids = _items_text(_get(dataset, "ReferencedSeriesSequence"), "SeriesInstanceUID")
    for keyword in (
        "StudiesContainingOtherReferencedInstancesSequence",
        "CurrentRequestedProcedureEvidenceSequence",
        "PertinentOtherEvidenceSequence",
    ):
        for study in _items(_get(dataset, keyword)):
            for uid in _items_text(study.get("ReferencedSeriesSequence"), "SeriesInstanceUID"):
                if uid not in uids:
                    uids.append(uid)
    return uids


def _radiopharmaceutical(dataset: Dataset) -> str:
    items = _items(_get(dataset, "RadiopharmaceuticalInformationSequence"))
    return (
        _convert(FieldType.KEYWORD, _element_value(items[0], "Radiopharmaceutical"))
        if items
        else ""
    )


def _instance_order(entry: tuple[str, Mapping[str, Any]]) -> tuple[bool, int, str]:
    uid, summary = entry
    number = summary.get("InstanceNumber")
    return (not isinstance(number, int), number if isinstance(number, int) else 0, uid)


def _on(doc: Mapping[str, Any]) -> object:
    return doc.get("StudyDate") or doc.get("SeriesDate")


def _contrast(doc: Mapping[str, Any], summaries: list[Mapping[str, Any]]) -> bool | None:
    if doc.get("Modality") in _RESULT_MODALITIES or "Rows" not in doc:
        return None
    return any(
        str(s.get("ContrastBolusAgent", "")).strip().upper() not in _NO_CONTRAST for s in summaries
    )
