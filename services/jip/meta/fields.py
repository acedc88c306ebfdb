"""The field catalogue: every field a series document holds and a cohort query may name.

Names are DICOM keywords (PS3.6) where one exists; derived fields (``PatientAgeYears``,
``Contrast``, ``SegmentLabels``, the counts) have names of their own. Patient and study
fields are copied onto each series document so that one flat document answers a cohort
query without joins. Anything not listed here, private tags included, is never indexed.

Types follow OpenSearch: ``keyword`` is exact and case-sensitive, ``text`` is tokenised
for ``match`` (and has an exact ``<name>.keyword`` twin for term, wildcard and facets, as
OpenSearch's own dynamic mapping offers), ``integer``, ``float``, ``date`` (stored as
``yyyy-MM-dd``) and ``boolean``. ``multi`` fields hold a list; a clause matches a
document when any of its values matches.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from jip.errors import Invalid


class FieldType(enum.StrEnum):
    KEYWORD = "keyword"
    TEXT = "text"
    INTEGER = "integer"
    FLOAT = "float"
    DATE = "date"
    BOOLEAN = "boolean"


class Level(enum.StrEnum):
    PATIENT = "patient"
    STUDY = "study"
    SERIES = "series"


KEYWORD_SUFFIX = ".keyword"


@dataclass(frozen=True)
class Field:
    """One catalogue entry.

    ``column``: one of the fields most cohort queries filter and facet on (it orders the
    SQLite index's columns); every single-valued field has a typed column there, and the
    index's columnar cache answers the queries (``meta/index_sqlite_columns.py``).
    ``source``: the stored field a ``<name>.keyword`` twin reads; the name itself otherwise.
    """

    name: str
    type: FieldType
    level: Level
    multi: bool = False
    column: bool = False
    source: str = ""

    @property
    def stored(self) -> str:
        return self.source or self.name


_K, _T, _I, _F, _D, _B = (
    FieldType.KEYWORD,
    FieldType.TEXT,
    FieldType.INTEGER,
    FieldType.FLOAT,
    FieldType.DATE,
    FieldType.BOOLEAN,
)
_P, _ST, _SE = Level.PATIENT, Level.STUDY, Level.SERIES

# (name, type, level, multi, column)
_CATALOGUE: tuple[tuple[str, FieldType, Level, bool, bool], ...] = (
    # patient
    ("PatientID", _K, _P, False, True),
    ("PatientSex", _K, _P, False, True),
    ("PatientAge", _K, _P, False, False),  # as written, e.g. "045Y"
    ("PatientAgeYears", _F, _P, False, True),
    ("PatientBirthDate", _D, _P, False, False),
    ("PatientSize", _F, _P, False, False),
    ("PatientWeight", _F, _P, False, False),
    # study
    ("StudyInstanceUID", _K, _ST, False, True),
    ("StudyDate", _D, _ST, False, True),
    ("StudyTime", _K, _ST, False, False),
    ("StudyDescription", _T, _ST, False, True),
    ("StudyID", _K, _ST, False, False),
    ("AccessionNumber", _K, _ST, False, True),
    ("InstitutionName", _K, _ST, False, True),
    ("InstitutionalDepartmentName", _K, _ST, False, False),
    # series
    ("SeriesInstanceUID", _K, _SE, False, True),
    ("Modality", _K, _SE, False, True),
    ("SeriesDescription", _T, _SE, False, True),
    ("SeriesNumber", _I, _SE, False, False),
    ("SeriesDate", _D, _SE, False, False),
    ("SeriesTime", _K, _SE, False, False),
    ("BodyPartExamined", _K, _SE, False, True),
    ("ProtocolName", _T, _SE, False, False),
    ("Manufacturer", _K, _SE, False, True),
    ("ManufacturerModelName", _K, _SE, False, True),
    ("StationName", _K, _SE, False, False),
    ("SoftwareVersions", _K, _SE, True, False),
    ("SOPClassUID", _K, _SE, False, True),
    ("ImageType", _K, _SE, True, False),
    ("Laterality", _K, _SE, False, False),
    ("PatientPosition", _K, _SE, False, False),
    ("ViewPosition", _K, _SE, False, False),
    ("SliceThickness", _F, _SE, False, True),
    ("SpacingBetweenSlices", _F, _SE, False, False),
    ("PixelSpacing", _F, _SE, True, False),  # [row spacing, column spacing] in mm
    ("Rows", _I, _SE, False, False),
    ("Columns", _I, _SE, False, False),
    ("BitsAllocated", _I, _SE, False, False),
    ("PhotometricInterpretation", _K, _SE, False, False),
    ("ContrastBolusAgent", _K, _SE, False, False),
    ("Contrast", _B, _SE, False, True),
    ("KVP", _F, _SE, False, False),
    ("ConvolutionKernel", _K, _SE, True, False),
    ("MagneticFieldStrength", _F, _SE, False, True),
    ("ScanningSequence", _K, _SE, True, False),
    ("SequenceVariant", _K, _SE, True, False),
    ("SequenceName", _K, _SE, False, False),
    ("MRAcquisitionType", _K, _SE, False, False),
    ("DiffusionBValues", _F, _SE, True, False),  # s/mm², distinct, sorted (meta.diffusion)
    ("EchoTime", _F, _SE, False, False),
    ("RepetitionTime", _F, _SE, False, False),
    ("InversionTime", _F, _SE, False, False),
    ("FlipAngle", _F, _SE, False, False),
    ("Radiopharmaceutical", _K, _SE, False, False),
    ("Units", _K, _SE, False, False),
    ("NumberOfInstances", _I, _SE, False, True),
    ("NumberOfFrames", _I, _SE, False, False),  # total over the series
    ("TotalBytes", _I, _SE, False, False),
    # results (SEG, SR) and what they refer to
    ("ReferencedSeriesInstanceUID", _K, _SE, True, False),
    ("SegmentLabels", _K, _SE, True, False),
    # the projects the series belongs to (jip.store.catalog.projects); searches filter on it
    ("Projects", _K, _SE, True, False),
)

FIELDS: dict[str, Field] = {
    name: Field(name, ftype, level, multi, column)
    for name, ftype, level, multi, column in _CATALOGUE
}

ID_FIELD = "SeriesInstanceUID"


def lookup(name: object, where: str = "field") -> Field:
    """The catalogue entry for ``name`` (``X.keyword`` for a text field ``X`` included)."""
    if not isinstance(name, str):
        raise Invalid(f"{where}: a field name must be a string, got {name!r}")
    field = FIELDS.get(name)
    if field is not None:
        return field
    if name.endswith(KEYWORD_SUFFIX):
        base = FIELDS.get(name.removesuffix(KEYWORD_SUFFIX))
        if base is not None and base.type is FieldType.TEXT:
            return Field(name, FieldType.KEYWORD, base.level, base.multi, base.column, base.name)
    raise Invalid(f"{where}: unknown field {name!r}")


def stored_fields() -> list[Field]:
    """The fields a document may hold, in catalogue order."""
    return list(FIELDS.values())


def parse_date(value: object) -> str | None:
    """``yyyyMMdd`` or ``yyyy-MM-dd`` as ``yyyy-MM-dd``; None when it is neither."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if len(text) == 8 and text.isdecimal():
        text = f"{text[:4]}-{text[4:6]}-{text[6:]}"
    if len(text) != 10 or text[4] != "-" or text[7] != "-":
        return None
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        return None


Scalar = str | int | float | bool
INT64 = 2**63  # integers are 64-bit in both engines (SQLite INTEGER, OpenSearch long)


def coerce(field: Field, value: object) -> Scalar | None:
    """``value`` as the JSON value ``field`` stores, or None when its type is wrong."""
    match field.type:
        case FieldType.KEYWORD | FieldType.TEXT:
            return value if isinstance(value, str) else None
        case FieldType.INTEGER:
            if isinstance(value, bool) or not isinstance(value, int | float):
                return None
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            return value if isinstance(value, int) and -INT64 <= value < INT64 else None
        case FieldType.FLOAT:
            if isinstance(value, bool) or not isinstance(value, int | float):
                return None
            number = float(value)
            return number if math.isfinite(number) else None
        case FieldType.DATE:
            return parse_date(value)
        case FieldType.BOOLEAN:
            return value if isinstance(value, bool) else None
    return None  # pragma: no cover


_CANONICAL: dict[FieldType, type] = {
    FieldType.KEYWORD: str,
    FieldType.TEXT: str,
    FieldType.INTEGER: int,
    FieldType.FLOAT: float,
    FieldType.BOOLEAN: bool,
}


def normalize_document(doc: Mapping[str, object]) -> dict[str, Any]:
    """A document checked against the catalogue: typed values, no empty ones.

    Empty values (None, "", []) are dropped, as DICOM treats an empty attribute as absent;
    a multi-valued field always holds a list (in its order: PixelSpacing is row, column).
    Unknown fields and values of the wrong type are :class:`Invalid`, naming the field.
    """
    uid = doc.get(ID_FIELD)
    if not isinstance(uid, str) or not uid:
        raise Invalid(f"document has no {ID_FIELD}")
    out: dict[str, Any] = {}
    for name, raw in doc.items():
        field = FIELDS.get(name)
        if field is None:
            raise Invalid(f"document {uid}: unknown field {name!r}")
        kind = type(raw)  # fast path: a value already of its field's JSON type
        if (
            kind is _CANONICAL.get(field.type)
            and not field.multi
            and raw != ""
            and (
                kind is not float or math.isfinite(raw)  # type: ignore[arg-type]
            )
            and (kind is not int or -INT64 <= raw < INT64)  # type: ignore[operator]
        ):
            out[name] = raw
            continue
        if raw is None or raw == "" or raw == []:
            continue
        if isinstance(raw, list | tuple):
            if not field.multi:
                raise Invalid(f"document {uid}: field {name!r} takes one value, not a list")
            values: list[Scalar] = []
            for item in raw:
                value = coerce(field, item)
                if value is None:
                    raise Invalid(f"document {uid}: {name!r} value {item!r} is not {field.type}")
                if value != "":
                    values.append(value)
            if values:
                out[name] = values
            continue
        value = coerce(field, raw)
        if value is None:
            raise Invalid(f"document {uid}: {name!r} value {raw!r} is not {field.type}")
        out[name] = [value] if field.multi else value
    return out


_WORD = re.compile(r"\w+")
_JOINERS = re.compile(r"[.':,]")


def analyze(text: str) -> list[str]:
    """Tokens of ``text`` as OpenSearch's ``standard`` analyzer makes them, for the
    scripts DICOM descriptions use: lowercased runs of letters, digits and ``_``, split at
    anything else, except that (as Unicode word segmentation, UAX #29, does) a single
    ``.`` or ``'`` joins two letters or two digits (``e.g``, ``2.5``), ``:`` joins two
    letters and ``,`` two digits (``1,000``)."""
    text = text.lower()
    if not _JOINERS.search(text):
        return [t for t in _WORD.findall(text) if t.strip("_")]
    tokens: list[str] = []
    end = -2
    for found in _WORD.finditer(text):
        start = found.start()
        if tokens and start == end + 1 and _joins(text[end - 1], text[end], text[start]):
            tokens[-1] += text[end : found.end()]
        else:
            tokens.append(found.group())
        end = found.end()
    return [t for t in tokens if t.strip("_")]


def _joins(before: str, mark: str, after: str) -> bool:
    letters = before.isalpha() and after.isalpha()
    digits = before.isdecimal() and after.isdecimal()
    return (
        (mark in ".'" and (letters or digits))
        or (mark == ":" and letters)
        or (mark == "," and digits)
    )
