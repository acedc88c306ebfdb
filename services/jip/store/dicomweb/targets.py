"""Target resources (PS3.18 §8.2) and the response shapes every DICOMweb route shares.

A target names study, series and instance UIDs in its path: each UID is checked
against PS3.5 §9.1 (a path-like "UID" is a 400), and a series or instance that
exists but under another study or series is a 404, as if it did not exist.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from jip.errors import NotFound
from jip.store.catalog.catalog import Catalog, StoredInstance
from jip.store.dicom_file import check_uid
from jip.store.dicomweb import dicom_xml
from jip.store.dicomweb.media_types import (
    DICOM_JSON,
    DICOM_XML,
    JSON,
    MediaRange,
    choose,
    parse_accept,
)
from jip.store.dicomweb.multipart import Part, new_boundary, related_content_type, write_parts


def accepted(request: Request) -> list[MediaRange]:
    """The client's acceptable media ranges, best first (PS3.18 §8.3.3.1, §8.7)."""
    return parse_accept(request.headers.get("accept"), request.query_params.getlist("accept"))


def study_instances(catalog: Catalog, study_uid: str) -> list[StoredInstance]:
    return catalog.instances_of_study(check_uid(study_uid, "StudyInstanceUID"))


def series_instances(catalog: Catalog, study_uid: str, series_uid: str) -> list[StoredInstance]:
    study_uid = check_uid(study_uid, "StudyInstanceUID")
    instances = catalog.instances_of_series(check_uid(series_uid, "SeriesInstanceUID"))
    if instances[0].study_instance_uid != study_uid:
        raise NotFound(f"series {series_uid} not found in study {study_uid}")
    return instances


def one_instance(catalog: Catalog, study_uid: str, series_uid: str, sop_uid: str) -> StoredInstance:
    study_uid = check_uid(study_uid, "StudyInstanceUID")
    series_uid = check_uid(series_uid, "SeriesInstanceUID")
    instance = catalog.instance(check_uid(sop_uid, "SOPInstanceUID"))
    if (instance.study_instance_uid, instance.series_instance_uid) != (study_uid, series_uid):
        raise NotFound(f"instance {sop_uid} not found in series {series_uid} of study {study_uid}")
    return instance


def by_series(instances: Sequence[StoredInstance]) -> dict[str, list[StoredInstance]]:
    groups: dict[str, list[StoredInstance]] = {}
    for instance in instances:
        groups.setdefault(instance.series_instance_uid, []).append(instance)
    return groups


def multipart_response(
    parts: Iterable[Part], part_type: str, status_code: int = 200, **params: str
) -> StreamingResponse:
    boundary = new_boundary()
    return StreamingResponse(
        write_parts(parts, boundary),
        status_code=status_code,
        media_type=related_content_type(part_type, boundary, **params),
    )


def dataset_response(
    request: Request,
    payload: bytes | list[dict[str, Any]] | dict[str, Any],
    *,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    """DICOM JSON (default) or Native DICOM Model XML parts, as the client accepts.

    ``payload`` is serialized JSON (an array) or the datasets themselves; a single
    dataset (a STOW-RS response) is one JSON object or one XML document.
    """
    media = choose(accepted(request), [DICOM_JSON, JSON, DICOM_XML])
    single = isinstance(payload, dict)
    if media.media_type == DICOM_XML:
        parsed: Any = json.loads(payload) if isinstance(payload, bytes) else payload
        datasets: list[dict[str, Any]] = [parsed] if single else parsed
        documents = [dicom_xml.native_model(d) for d in datasets]
        if single and not media.multipart:
            return Response(documents[0], status_code, headers, media_type=DICOM_XML)
        response: Response = multipart_response(
            (Part(DICOM_XML, [doc]) for doc in documents), DICOM_XML, status_code
        )
        response.headers.update(headers or {})
        return response
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return Response(body, status_code, headers, media_type=media.media_type)
