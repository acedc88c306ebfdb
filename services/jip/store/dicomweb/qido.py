"""QIDO-RS (PS3.18 §10.6): search for studies, series and instances.

Matching is the catalog's (:mod:`jip.store.catalog.queries`, PS3.4 C.2.2.2): wildcards,
date/time ranges, UID lists (comma- or backslash-separated). Keys the catalog cannot
match are ignored and named in a ``Warning`` header, as PS3.18 §8.3.4.1 allows;
``fuzzymatching=true`` is ignored the same way (§8.3.4.2). Results carry the return
attributes of PS3.18 Tables 10.6.3-3/4/5 plus ``includefield`` attributes; those the
catalog does not hold come from the cached header of one instance of the entity.
No match is a 200 with an empty array (CP-2473, replacing the 204 of PS3.18 2025b).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from jip.api_types import MAX_ROW_ID
from jip.errors import Invalid
from jip.store.catalog.projects import Scope
from jip.store.catalog.queries import ATTRIBUTES, COMPUTED, QueryLevel, find_rows, levels_up_to
from jip.store.dicom_file import check_uid
from jip.store.dicomweb.deps import BaseUrlDep, ScopedCatalogDep, SeriesMetadataDep
from jip.store.dicomweb.series_metadata import SeriesMetadata
from jip.store.dicomweb.targets import dataset_response

router = APIRouter(tags=["dicomweb: QIDO-RS"])

MAX_RESULTS = 5000  # without ``limit``; more are paged with offset (Warning header)
_CONTROL = {"limit", "offset", "includefield", "fuzzymatching", "accept", "charset"}
_TAG = re.compile(r"^[0-9A-Fa-f]{8}$")

# Attributes that live at study (incl. patient) or series level, for ``includefield=all``
# and for taking non-catalogued attributes from an instance header (PS3.3 C.7.1-C.7.5).
STUDY_LEVEL = {
    "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
    "OtherPatientIDsSequence", "PatientAge", "PatientSize", "PatientWeight",
    "EthnicGroup", "PatientComments", "StudyInstanceUID", "StudyDate", "StudyTime",
    "AccessionNumber", "StudyID", "StudyDescription", "ReferringPhysicianName",
    "PhysiciansOfRecord", "NameOfPhysiciansReadingStudy", "ProcedureCodeSequence",
    "AdmittingDiagnosesDescription", "TimezoneOffsetFromUTC", "SpecificCharacterSet",
}  # fmt: skip
SERIES_LEVEL = STUDY_LEVEL | {
    "Modality", "SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "SeriesDate",
    "SeriesTime", "Laterality", "BodyPartExamined", "ProtocolName", "PatientPosition",
    "PerformingPhysicianName", "OperatorsName", "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime", "PerformedProcedureStepID",
    "PerformedProcedureStepDescription", "RequestAttributesSequence", "FrameOfReferenceUID",
    "Manufacturer", "ManufacturerModelName", "StationName", "DeviceSerialNumber",
    "SoftwareVersions", "InstitutionName", "InstitutionalDepartmentName",
}  # fmt: skip


@dataclass
class Search:
    """A parsed QIDO-RS query."""

    level: QueryLevel
    identifier: dict[str, str] = field(default_factory=dict)
    include: set[str] = field(default_factory=set)
    include_all: bool = False
    limit: int | None = None
    offset: int = 0
    warnings: list[str] = field(default_factory=list)


def _keyword(name: str) -> str:
    """A keyword from a keyword or an 8-digit tag; :class:`Invalid` for anything else."""
    if _TAG.match(name):
        keyword = keyword_for_tag(int(name, 16))
        if keyword:
            return keyword
        raise Invalid(f"query parameter {name!r} is not a known attribute tag")
    if tag_for_keyword(name) is None:
        raise Invalid(f"query parameter {name!r} is neither a DICOM keyword nor a tag")
    return name


def _non_negative(name: str, text: str) -> int:
    if not text.isdecimal() or int(text) > MAX_ROW_ID:
        raise Invalid(f"{name}={text!r} must be a non-negative integer below 2**63")
    return int(text)


def parse_search(request: Request, level: QueryLevel, fixed: dict[str, str]) -> Search:
    search = Search(level, identifier=dict(fixed))
    unmatched = []
    for name, value in request.query_params.multi_items():
        lowered = name.lower()
        if lowered == "limit":
            search.limit = _non_negative(name, value)
        elif lowered == "offset":
            search.offset = _non_negative(name, value)
        elif lowered == "fuzzymatching":
            if value.lower() not in ("true", "false"):
                raise Invalid(f"fuzzymatching={value!r} must be true or false")
            if value.lower() == "true":
                search.warnings.append(
                    "The fuzzymatching parameter is not supported. "
                    "Only literal matching has been performed."
                )
        elif lowered == "includefield":
            for item in (v.strip() for v in value.split(",")):
                if item.lower() == "all":
                    search.include_all = True
                elif item:
                    search.include.add(_keyword(item))
        elif lowered in _CONTROL:
            continue
        elif "." in name:
            unmatched.append(name)  # sequence matching (PS3.18 §8.3.4.1) is not supported
        else:
            _add_match(search, _keyword(name), value, unmatched, fixed)
    if unmatched:
        search.warnings.append(
            "The following attributes are not supported for matching: " + ", ".join(unmatched)
        )
    return search


def _add_match(
    search: Search, keyword: str, value: str, unmatched: list[str], fixed: dict[str, str]
) -> None:
    supported = {a.keyword for a in ATTRIBUTES.values() if a.level in levels_up_to(search.level)}
    if search.level == QueryLevel.STUDY:
        supported.add("ModalitiesInStudy")
    if keyword not in supported:
        unmatched.append(keyword)
        return
    attribute = ATTRIBUTES.get(keyword)
    if keyword == "ModalitiesInStudy" or (attribute is not None and attribute.vr == "UI"):
        value = value.replace(",", "\\")  # UID lists: comma- or backslash-separated
    if keyword in fixed:
        if value != fixed[keyword]:
            raise Invalid(f"{keyword} is given by the URL; the parameter {value!r} contradicts it")
        return
    previous = search.identifier.get(keyword)
    search.identifier[keyword] = f"{previous}\\{value}" if previous else value


# -- results --------------------------------------------------------------------------------
@functools.cache
def _tag_and_vr(keyword: str) -> tuple[str, str]:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(keyword)
    return f"{tag:08X}", dictionary_VR(keyword)


def _element(vr: str, value: Any) -> dict[str, Any]:
    if value in ("", None, []):
        return {"vr": vr}
    values = value if isinstance(value, list) else [value]
    if vr == "PN":
        return {"vr": vr, "Value": [{"Alphabetic": str(v)} for v in values]}
    if vr in ("IS", "US", "UL", "SS", "SL"):
        return {"vr": vr, "Value": [int(v) for v in values]}
    return {"vr": vr, "Value": [str(v) for v in values]}


def _row_json(row: dict[str, Any]) -> dict[str, Any]:
    """A catalog row (keyword → value) as DICOM JSON, without pydicom objects."""
    result: dict[str, Any] = {}
    for keyword, value in row.items():
        if keyword.startswith("_"):
            continue
        if keyword == "SpecificCharacterSet" and isinstance(value, str):
            value = value.split("\\") if value else None
        tag, vr = _tag_and_vr(keyword)
        result[tag] = _element(vr, value)
    return result


def _retrieve_url(base_url: str, row: dict[str, Any], level: QueryLevel) -> str:
    url = f"{base_url}/studies/{row['StudyInstanceUID']}"
    if level in (QueryLevel.SERIES, QueryLevel.IMAGE):
        url += f"/series/{row['SeriesInstanceUID']}"
    if level == QueryLevel.IMAGE:
        url += f"/instances/{row['SOPInstanceUID']}"
    return url


def _wanted_from_header(search: Search, obj: dict[str, Any]) -> set[str]:
    """Keywords to take from an instance header: includefield ones not answered yet."""
    allowed = {QueryLevel.STUDY: STUDY_LEVEL, QueryLevel.SERIES: SERIES_LEVEL}.get(search.level)
    wanted = set(search.include)
    if search.include_all:
        wanted |= allowed if allowed is not None else {"*"}
    answered = set(obj)
    return {k for k in wanted if k == "*" or _tag_of(k) not in answered}


def _tag_of(keyword: str) -> str:
    tag = tag_for_keyword(keyword)
    return f"{tag:08X}" if tag is not None else keyword


def _merge_header(obj: dict[str, Any], header: dict[str, Any], wanted: set[str]) -> None:
    everything = "*" in wanted
    tags = {f"{t:08X}" for k in wanted if k != "*" and (t := tag_for_keyword(k))}
    for tag, element in header.items():
        if tag in obj or "BulkDataURI" in element or tag.startswith("7FE0"):
            continue
        if everything or tag in tags:
            obj[tag] = element


def run_search(
    search: Search, catalog: Any, cache: SeriesMetadata, base_url: str
) -> tuple[list[dict[str, Any]], bool]:
    """Matching results as DICOM JSON, and whether more remain beyond the server's cap."""
    limit = search.limit if search.limit else MAX_RESULTS
    found = find_rows(
        catalog,
        search.level,
        search.identifier,
        limit=min(limit, MAX_RESULTS) + 1,
        offset=search.offset,
    )
    more = len(found) > min(limit, MAX_RESULTS) and not search.limit
    found = found[: min(limit, MAX_RESULTS)]
    objects = []
    for row in found:
        obj = _row_json(row)
        obj["00081190"] = {"vr": "UR", "Value": [_retrieve_url(base_url, row, search.level)]}
        obj["00080056"] = {"vr": "CS", "Value": ["ONLINE"]}
        objects.append(obj)
    _include_from_headers(search, found, objects, cache, getattr(catalog, "scope", None))
    _drop_computed_not_asked(search, objects)
    return [dict(sorted(o.items())) for o in objects], more


def _include_from_headers(
    search: Search,
    found: list[dict[str, Any]],
    objects: list[dict[str, Any]],
    cache: SeriesMetadata,
    scope: Scope = None,
) -> None:
    if not objects or not (search.include or search.include_all):
        return
    if not any(_wanted_from_header(search, o) for o in objects):
        return
    if search.level == QueryLevel.IMAGE:
        keys = [str(row["SOPInstanceUID"]) for row in found]
        headers = cache.headers([cache.catalog.instance(uid) for uid in keys])
    else:
        keyword = "StudyInstanceUID" if search.level == QueryLevel.STUDY else "SeriesInstanceUID"
        keys = [str(row[keyword]) for row in found]
        headers = cache.representative_headers(search.level.value.lower(), keys, scope)
    for key, obj in zip(keys, objects, strict=True):
        header = headers.get(key)
        if header:
            _merge_header(obj, header, _wanted_from_header(search, obj))


def _drop_computed_not_asked(search: Search, objects: list[dict[str, Any]]) -> None:
    """Computed attributes of other levels (patient counts) are not return keys here."""
    keep = {
        QueryLevel.STUDY: {"NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",
                           "ModalitiesInStudy", "SOPClassesInStudy"},
        QueryLevel.SERIES: {"NumberOfSeriesRelatedInstances"},
        QueryLevel.IMAGE: set(),
    }[search.level] | search.include  # fmt: skip
    drop = {f"{tag_for_keyword(k):08X}" for k in COMPUTED if k not in keep and tag_for_keyword(k)}
    for obj in objects:
        for tag in drop & obj.keys():
            del obj[tag]


def _respond(
    request: Request,
    level: QueryLevel,
    fixed: dict[str, str],
    catalog: Any,
    cache: SeriesMetadata,
    base_url: str,
) -> Response:
    search = parse_search(request, level, fixed)
    objects, more = run_search(search, catalog, cache, base_url)
    warnings = list(search.warnings)
    if more:
        warnings.append(
            f"There are additional results that can be requested (at most {MAX_RESULTS} "
            "per response; use offset)."
        )
    headers = {"Warning": ", ".join(f'299 jip "{w}"' for w in warnings)} if warnings else None
    return dataset_response(request, objects, headers=headers)


@router.get("/studies", summary="Search for Studies")
def search_studies(
    request: Request, catalog: ScopedCatalogDep, cache: SeriesMetadataDep, base_url: BaseUrlDep
) -> Response:
    return _respond(request, QueryLevel.STUDY, {}, catalog, cache, base_url)


@router.get("/series", summary="Search for Series")
def search_series(
    request: Request, catalog: ScopedCatalogDep, cache: SeriesMetadataDep, base_url: BaseUrlDep
) -> Response:
    return _respond(request, QueryLevel.SERIES, {}, catalog, cache, base_url)


@router.get("/studies/{study}/series", summary="Search for Series of a Study")
def search_study_series(
    study: str,
    request: Request,
    catalog: ScopedCatalogDep,
    cache: SeriesMetadataDep,
    base_url: BaseUrlDep,
) -> Response:
    fixed = {"StudyInstanceUID": check_uid(study, "StudyInstanceUID")}
    return _respond(request, QueryLevel.SERIES, fixed, catalog, cache, base_url)


@router.get("/instances", summary="Search for Instances")
def search_instances(
    request: Request, catalog: ScopedCatalogDep, cache: SeriesMetadataDep, base_url: BaseUrlDep
) -> Response:
    return _respond(request, QueryLevel.IMAGE, {}, catalog, cache, base_url)


@router.get("/studies/{study}/instances", summary="Search for Instances of a Study")
def search_study_instances(
    study: str,
    request: Request,
    catalog: ScopedCatalogDep,
    cache: SeriesMetadataDep,
    base_url: BaseUrlDep,
) -> Response:
    fixed = {"StudyInstanceUID": check_uid(study, "StudyInstanceUID")}
    return _respond(request, QueryLevel.IMAGE, fixed, catalog, cache, base_url)


@router.get(
    "/studies/{study}/series/{series}/instances", summary="Search for Instances of a Series"
)
def search_series_instances(
    study: str,
    series: str,
    request: Request,
    catalog: ScopedCatalogDep,
    cache: SeriesMetadataDep,
    base_url: BaseUrlDep,
) -> Response:
    fixed = {
        "StudyInstanceUID": check_uid(study, "StudyInstanceUID"),
        "SeriesInstanceUID": check_uid(series, "SeriesInstanceUID"),
    }
    return _respond(request, QueryLevel.IMAGE, fixed, catalog, cache, base_url)
