"""Attribute matching over the catalog, shared by C-FIND (PS3.4 C.6) and QIDO-RS (PS3.18 §10.6).

An identifier maps DICOM keywords to PS3.4 C.2.2.2 match strings: empty matches
everything, ``*``/``?`` are wildcards, ``a-b`` is an inclusive range for DA/TM/DT,
backslash-separated values are value lists (UIDs, code strings). Results are pydicom
Datasets holding the catalogued attributes of the level and its parents, plus the
computed ones (``NumberOfStudyRelatedSeries``, ``ModalitiesInStudy``, …).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from sqlalchemy import ColumnElement, Select, and_, distinct, func, or_, select
from sqlalchemy.orm import InstrumentedAttribute

from jip.errors import Invalid
from jip.store.catalog.catalog import Catalog
from jip.store.catalog.projects import Scope, series_in_scope
from jip.store.catalog.tables import Instance, Patient, Series, Study


class QueryLevel(enum.StrEnum):
    """Query/Retrieve Level (0008,0052) values, PS3.4 C.6."""

    PATIENT = "PATIENT"
    STUDY = "STUDY"
    SERIES = "SERIES"
    IMAGE = "IMAGE"


_ORDER = [QueryLevel.PATIENT, QueryLevel.STUDY, QueryLevel.SERIES, QueryLevel.IMAGE]


@dataclass(frozen=True)
class Attribute:
    keyword: str
    level: QueryLevel
    vr: str
    column: InstrumentedAttribute[Any]


def _attrs(
    level: QueryLevel, *rows: tuple[str, str, InstrumentedAttribute[Any]]
) -> list[Attribute]:
    return [Attribute(keyword, level, vr, column) for keyword, vr, column in rows]


ATTRIBUTES: dict[str, Attribute] = {
    a.keyword: a
    for a in [
        *_attrs(
            QueryLevel.PATIENT,
            ("PatientID", "LO", Patient.patient_id),
            ("PatientName", "PN", Patient.patient_name),
            ("PatientBirthDate", "DA", Patient.patient_birth_date),
            ("PatientSex", "CS", Patient.patient_sex),
        ),
        *_attrs(
            QueryLevel.STUDY,
            ("StudyInstanceUID", "UI", Study.study_instance_uid),
            ("StudyDate", "DA", Study.study_date),
            ("StudyTime", "TM", Study.study_time),
            ("AccessionNumber", "SH", Study.accession_number),
            ("StudyID", "SH", Study.study_id),
            ("StudyDescription", "LO", Study.study_description),
            ("ReferringPhysicianName", "PN", Study.referring_physician_name),
        ),
        *_attrs(
            QueryLevel.SERIES,
            ("SeriesInstanceUID", "UI", Series.series_instance_uid),
            ("Modality", "CS", Series.modality),
            ("SeriesNumber", "IS", Series.series_number),
            ("SeriesDescription", "LO", Series.series_description),
            ("BodyPartExamined", "CS", Series.body_part_examined),
            ("PerformedProcedureStepStartDate", "DA", Series.performed_procedure_step_start_date),
            ("PerformedProcedureStepStartTime", "TM", Series.performed_procedure_step_start_time),
        ),
        *_attrs(
            QueryLevel.IMAGE,
            ("SOPInstanceUID", "UI", Instance.sop_instance_uid),
            ("SOPClassUID", "UI", Instance.sop_class_uid),
            ("InstanceNumber", "IS", Instance.instance_number),
            ("Rows", "US", Instance.rows),
            ("Columns", "US", Instance.columns),
            ("BitsAllocated", "US", Instance.bits_allocated),
            ("NumberOfFrames", "IS", Instance.number_of_frames),
        ),
    ]
}

# Computed attributes, each with the level it describes.
COMPUTED: dict[str, QueryLevel] = {
    "NumberOfPatientRelatedStudies": QueryLevel.PATIENT,
    "NumberOfPatientRelatedSeries": QueryLevel.PATIENT,
    "NumberOfPatientRelatedInstances": QueryLevel.PATIENT,
    "NumberOfStudyRelatedSeries": QueryLevel.STUDY,
    "NumberOfStudyRelatedInstances": QueryLevel.STUDY,
    "ModalitiesInStudy": QueryLevel.STUDY,
    "SOPClassesInStudy": QueryLevel.STUDY,
    "NumberOfSeriesRelatedInstances": QueryLevel.SERIES,
}

_PRIMARY = {
    QueryLevel.PATIENT: Patient.pk,
    QueryLevel.STUDY: Study.study_instance_uid,
    QueryLevel.SERIES: Series.series_instance_uid,
    QueryLevel.IMAGE: Instance.sop_instance_uid,
}


def levels_up_to(level: QueryLevel) -> list[QueryLevel]:
    return _ORDER[: _ORDER.index(level) + 1]


def find(
    catalog: Catalog,
    level: QueryLevel,
    identifier: dict[str, str],
    *,
    limit: int | None = None,
    offset: int = 0,
) -> list[Dataset]:
    """Datasets of every entity at ``level`` matching ``identifier``.

    Keys the catalog does not hold are ignored for matching (PS3.4 C.2.2.1.1 lets an
    SCP match on the attributes it supports); callers return them empty.
    """
    rows = find_rows(catalog, level, identifier, limit=limit, offset=offset)
    levels = levels_up_to(level)
    return [_dataset(row, levels) for row in rows]


def find_rows(
    catalog: Catalog,
    level: QueryLevel,
    identifier: dict[str, str],
    *,
    limit: int | None = None,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """As :func:`find`, as plain rows keyed by keyword (``_``-prefixed keys are internal).

    For callers that serialize many results (QIDO-RS): building pydicom Datasets
    costs several times the SQL. A scoped catalog matches, and counts, only the series
    of its projects (and the studies and patients that have any).
    """
    levels = levels_up_to(level)
    query = _base_query(level)
    visible = _visible(level, catalog.scope)
    if visible is not None:
        query = query.where(visible)
    for keyword, value in identifier.items():
        if value in ("", None, "*"):
            continue
        condition = _condition(keyword, str(value), levels)
        if condition is not None:
            query = query.where(condition)
    query = query.order_by(*_ordering(level)).offset(offset)
    if limit is not None:
        query = query.limit(limit)
    with catalog.engine.connect() as conn:
        rows = [dict(row._mapping) for row in conn.execute(query)]
        _add_computed(conn, level, rows, catalog.scope)
    return rows


def _visible(level: QueryLevel, scope: Scope) -> ColumnElement[bool] | None:
    """The rows of ``level`` with at least one series in ``scope``."""
    series = series_in_scope(scope)
    if series is None or level in (QueryLevel.SERIES, QueryLevel.IMAGE):
        return series
    studies = select(Series.study_instance_uid).where(series)
    if level == QueryLevel.STUDY:
        return Study.study_instance_uid.in_(studies)
    return Patient.pk.in_(select(Study.patient_pk).where(Study.study_instance_uid.in_(studies)))


def _base_query(level: QueryLevel) -> Select[Any]:
    columns = [
        a.column.label(a.keyword) for a in ATTRIBUTES.values() if a.level in levels_up_to(level)
    ]
    columns.append(Patient.pk.label("_patient_pk"))
    if level != QueryLevel.PATIENT:
        columns.append(Study.specific_character_set.label("SpecificCharacterSet"))
    if level == QueryLevel.PATIENT:
        return select(*columns)
    query = select(*columns).select_from(Study).join(Patient, Patient.pk == Study.patient_pk)
    if level in (QueryLevel.SERIES, QueryLevel.IMAGE):
        query = query.join(Series, Series.study_instance_uid == Study.study_instance_uid)
    if level == QueryLevel.IMAGE:
        query = query.join(Instance, Instance.series_instance_uid == Series.series_instance_uid)
    return query


def _ordering(level: QueryLevel) -> list[Any]:
    order: list[Any] = (
        [Patient.patient_id]
        if level == QueryLevel.PATIENT
        else [Study.study_date, Study.study_time, Study.study_instance_uid]
    )
    if level in (QueryLevel.SERIES, QueryLevel.IMAGE):
        order += [Series.series_number, Series.series_instance_uid]
    if level == QueryLevel.IMAGE:
        order += [Instance.instance_number, Instance.sop_instance_uid]
    return order


def _condition(keyword: str, value: str, levels: list[QueryLevel]) -> ColumnElement[bool] | None:
    if keyword == "ModalitiesInStudy" and QueryLevel.STUDY in levels:
        modalities = [v for v in value.split("\\") if v]
        return Study.study_instance_uid.in_(
            select(Series.study_instance_uid).where(
                or_(*(_match(Series.modality, "CS", m) for m in modalities))
            )
        )
    attribute = ATTRIBUTES.get(keyword)
    if attribute is None or attribute.level not in levels:
        return None
    values = value.split("\\") if "\\" in value else [value]
    return or_(*(_match(attribute.column, attribute.vr, v) for v in values))


def _match(column: Any, vr: str, value: str) -> ColumnElement[bool]:
    """One PS3.4 C.2.2.2 match of ``value`` against ``column``."""
    if vr in ("DA", "TM", "DT") and "-" in value:
        return _range(column, vr, value)
    if vr in ("IS", "US"):
        try:
            return column == int(value)
        except ValueError as exc:
            raise Invalid(f"{value!r} is not a number") from exc
    if vr == "DA":
        _check_date(value)
    if "*" in value or "?" in value:
        pattern = (
            value.replace("\\", "\\\\")
            .replace("%", "\\%")
            .replace("_", "\\_")
            .replace("*", "%")
            .replace("?", "_")
        )
        if vr == "PN":
            return func.lower(column).like(pattern.lower(), escape="\\")
        return column.like(pattern, escape="\\")
    if vr == "PN":
        return func.lower(column) == value.lower()
    return column == value


def _range(column: Any, vr: str, value: str) -> ColumnElement[bool]:
    low, _, high = value.partition("-")
    low, high = low.strip(), high.strip()
    if vr == "DA" and not all(_is_date(part) for part in (low, high) if part):
        raise Invalid(f"date range {value!r} is not YYYYMMDD-YYYYMMDD")
    parts: list[ColumnElement[bool]] = [column != ""]
    if low:
        parts.append(column >= low)
    if high:
        if vr == "TM" and "." not in high:
            high = high.ljust(6, "9") + ".999999"  # "1200" covers up to 12:00:59.999999
        parts.append(column <= high)
    return and_(*parts)


def _is_date(value: str) -> bool:
    return len(value) == 8 and value.isdecimal()


def _check_date(value: str) -> None:
    if not _is_date(value):
        raise Invalid(f"date {value!r} is not YYYYMMDD")


def _add_computed(
    conn: Any, level: QueryLevel, rows: list[dict[str, Any]], scope: Scope = None
) -> None:
    """Fill the computed attributes for the (paged) result rows only."""
    if not rows:
        return
    visible = series_in_scope(scope)
    only = [] if visible is None else [visible]
    if level == QueryLevel.PATIENT:
        keys = [row["_patient_pk"] for row in rows]
        _fill(
            conn,
            rows,
            "_patient_pk",
            Study.patient_pk,
            keys,
            only,
            {
                "NumberOfPatientRelatedStudies": func.count(distinct(Study.study_instance_uid)),
                "NumberOfPatientRelatedSeries": func.count(distinct(Series.series_instance_uid)),
                "NumberOfPatientRelatedInstances": func.count(distinct(Instance.sop_instance_uid)),
            },
        )
    if level == QueryLevel.STUDY:
        keys = [row["StudyInstanceUID"] for row in rows]
        _fill(
            conn,
            rows,
            "StudyInstanceUID",
            Study.study_instance_uid,
            keys,
            only,
            {
                "NumberOfStudyRelatedSeries": func.count(distinct(Series.series_instance_uid)),
                "NumberOfStudyRelatedInstances": func.count(distinct(Instance.sop_instance_uid)),
            },
        )
        _fill_sets(conn, rows, keys, only)
    if level == QueryLevel.SERIES:
        keys = [row["SeriesInstanceUID"] for row in rows]
        _fill(
            conn,
            rows,
            "SeriesInstanceUID",
            Series.series_instance_uid,
            keys,
            only,
            {
                "NumberOfSeriesRelatedInstances": func.count(distinct(Instance.sop_instance_uid)),
            },
        )


def _fill(
    conn: Any,
    rows: list[dict[str, Any]],
    row_key: str,
    group_column: Any,
    keys: list[Any],
    only: list[ColumnElement[bool]],
    aggregates: dict[str, Any],
) -> None:
    query = (
        select(group_column.label("_key"), *(agg.label(name) for name, agg in aggregates.items()))
        .select_from(Study)
        .join(Series, Series.study_instance_uid == Study.study_instance_uid)
        .join(Instance, Instance.series_instance_uid == Series.series_instance_uid)
        .where(group_column.in_(keys), *only)
        .group_by(group_column)
    )
    found = {r._mapping["_key"]: r._mapping for r in conn.execute(query)}
    for row in rows:
        counts = found.get(row[row_key], {})
        for name in aggregates:
            row[name] = int(counts.get(name, 0) or 0)


def _fill_sets(
    conn: Any, rows: list[dict[str, Any]], study_uids: list[str], only: list[ColumnElement[bool]]
) -> None:
    query = (
        select(Series.study_instance_uid, Series.modality, Instance.sop_class_uid)
        .join(Instance, Instance.series_instance_uid == Series.series_instance_uid)
        .where(Series.study_instance_uid.in_(study_uids), *only)
        .distinct()
    )
    modalities: dict[str, set[str]] = {}
    classes: dict[str, set[str]] = {}
    for study_uid, modality, sop_class in conn.execute(query):
        if modality:
            modalities.setdefault(study_uid, set()).add(modality)
        classes.setdefault(study_uid, set()).add(sop_class)
    for row in rows:
        row["ModalitiesInStudy"] = sorted(modalities.get(row["StudyInstanceUID"], ()))
        row["SOPClassesInStudy"] = sorted(classes.get(row["StudyInstanceUID"], ()))


def _dataset(row: dict[str, Any], levels: Iterable[QueryLevel]) -> Dataset:
    ds = Dataset()
    charset = row.get("SpecificCharacterSet")
    if charset:
        ds.SpecificCharacterSet = charset.split("\\")
    for keyword, value in row.items():
        if keyword.startswith("_") or keyword == "SpecificCharacterSet":
            continue
        if value is None:
            value = ""  # present but empty: the SCP holds no value (PS3.4 C.2.2.1.3)
        setattr(ds, keyword, value)
    return ds


def supported_keywords(level: QueryLevel) -> set[str]:
    """Keywords this catalog can match and return at ``level``."""
    levels = levels_up_to(level)
    names = {a.keyword for a in ATTRIBUTES.values() if a.level in levels}
    return names | {k for k, lvl in COMPUTED.items() if lvl in levels}
