"""WADO-RS (PS3.18 §10.4): instances, metadata, bulk data and frames.

Instances go out in Explicit VR Little Endian unless the client names another syntax
(PS3.18 §8.7.3.5.2; :mod:`jip.store.dicomweb.transcoding`): ``transfer-syntax=*`` or the
stored syntax sends the stored bytes, Implicit VR Little Endian is produced too. Frames go
out in the stored syntax's media type when the client accepts it (``*/*``, the
``image/…`` type, or ``application/octet-stream; transfer-syntax=*``), else decoded to
native pixels (PS3.18 §8.7.3); 406 only when nothing acceptable can be produced.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import BinaryIO

import pydicom
from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from pydicom.dataset import Dataset

from jip.errors import Invalid, NotAcceptable, NotFound
from jip.store.catalog.catalog import StoredInstance
from jip.store.deps import StorageDep
from jip.store.dicomweb.deps import BaseUrlDep, LimitsDep, ScopedCatalogDep, SeriesMetadataDep
from jip.store.dicomweb.frames import (
    PixelData,
    can_decode,
    decoded_frames,
    parse_frame_list,
    read_pixel_data,
    stored_bytes_usable,
    stored_frames,
)
from jip.store.dicomweb.media_types import (
    DICOM,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    OCTET_STREAM,
    MediaRange,
    content_type_for_part,
    describe,
    frame_media_type,
    is_native,
)
from jip.store.dicomweb.multipart import Part, file_chunks
from jip.store.dicomweb.series_metadata import absolute_bulk_uris
from jip.store.dicomweb.targets import (
    accepted,
    by_series,
    dataset_response,
    multipart_response,
    one_instance,
    series_instances,
    study_instances,
)
from jip.store.dicomweb.transcoding import can_transcode, transcoded_chunks
from jip.store.storage.port import BlobStorage

log = logging.getLogger(__name__)
router = APIRouter(tags=["dicomweb: WADO-RS"])

STUDY = "/studies/{study}"
SERIES = STUDY + "/series/{series}"
INSTANCE = SERIES + "/instances/{instance}"


# -- instances --------------------------------------------------------------------------
def _dicom_syntax(ranges: list[MediaRange], stored: str) -> str | None:
    """The transfer syntax to send an instance stored in ``stored`` in, or None.

    Without a ``transfer-syntax`` parameter the default is Explicit VR Little Endian
    (PS3.18 §8.7.3.5.2); an instance that cannot be transcoded (big endian, video, no
    decoder) then goes out as stored rather than not at all. ``*`` keeps the stored bytes.
    """
    for media in ranges:
        if not media.matches(DICOM):
            continue
        wanted = media.transfer_syntax
        if wanted in ("*", stored):
            return stored
        if wanted is None:
            return EXPLICIT_VR_LITTLE_ENDIAN if can_transcode(stored) else stored
        if wanted in (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN) and can_decode(stored):
            return wanted
    return None


def _instance_parts(
    request: Request, storage: BlobStorage, instances: Sequence[StoredInstance]
) -> Response:
    ranges = accepted(request)
    plan = [(i, _dicom_syntax(ranges, i.transfer_syntax_uid)) for i in instances]
    for instance, syntax in plan:
        if syntax is None:
            raise NotAcceptable(
                f"instance {instance.sop_instance_uid} is stored as "
                f"{instance.transfer_syntax_uid} and cannot be sent as {describe(ranges)}"
            )

    def parts() -> Iterator[Part]:
        # Each instance is transcoded when its turn comes, so one at a time is in memory.
        for instance, syntax in plan:
            assert syntax is not None
            stored = instance.transfer_syntax_uid
            if syntax != stored:
                try:
                    chunks = transcoded_chunks(storage.open(instance.blob_key), syntax)
                    yield Part(content_type_for_part(DICOM, syntax), chunks)
                    continue
                except Exception:
                    # The stream has started: the instance goes out as stored, labelled so.
                    log.warning(
                        "instance not transcoded; sent as stored",
                        exc_info=True,
                        extra={"sop_instance_uid": instance.sop_instance_uid},
                    )
            chunks = file_chunks(storage.open(instance.blob_key))
            yield Part(content_type_for_part(DICOM, stored), chunks)

    return multipart_response(parts(), DICOM)


@router.get(STUDY, summary="Retrieve Study")
def retrieve_study(
    study: str, request: Request, catalog: ScopedCatalogDep, storage: StorageDep
) -> Response:
    return _instance_parts(request, storage, study_instances(catalog, study))


@router.get(SERIES, summary="Retrieve Series")
def retrieve_series(
    study: str, series: str, request: Request, catalog: ScopedCatalogDep, storage: StorageDep
) -> Response:
    return _instance_parts(request, storage, series_instances(catalog, study, series))


@router.get(INSTANCE, summary="Retrieve Instance")
def retrieve_instance(
    study: str,
    series: str,
    instance: str,
    request: Request,
    catalog: ScopedCatalogDep,
    storage: StorageDep,
) -> Response:
    return _instance_parts(request, storage, [one_instance(catalog, study, series, instance)])


# -- metadata ---------------------------------------------------------------------------
def _metadata_response(request: Request, payload: bytes, base_url: str) -> Response:
    return dataset_response(request, absolute_bulk_uris(payload, base_url))


@router.get(STUDY + "/metadata", summary="Retrieve Study Metadata")
def study_metadata(
    study: str,
    request: Request,
    catalog: ScopedCatalogDep,
    cache: SeriesMetadataDep,
    base_url: BaseUrlDep,
) -> Response:
    arrays = [
        cache.series_json(uid, members)
        for uid, members in by_series(study_instances(catalog, study)).items()
    ]
    payload = b"[" + b",".join(a[1:-1] for a in arrays if len(a) > 2) + b"]"
    return _metadata_response(request, payload, base_url)


@router.get(SERIES + "/metadata", summary="Retrieve Series Metadata")
def series_metadata(
    study: str,
    series: str,
    request: Request,
    catalog: ScopedCatalogDep,
    cache: SeriesMetadataDep,
    base_url: BaseUrlDep,
) -> Response:
    instances = series_instances(catalog, study, series)
    return _metadata_response(request, cache.series_json(series, instances), base_url)


@router.get(INSTANCE + "/metadata", summary="Retrieve Instance Metadata")
def instance_metadata(
    study: str,
    series: str,
    instance: str,
    request: Request,
    catalog: ScopedCatalogDep,
    cache: SeriesMetadataDep,
    base_url: BaseUrlDep,
) -> Response:
    stored = one_instance(catalog, study, series, instance)
    return _metadata_response(request, cache.instance_json(stored), base_url)


# -- frames and bulk data -----------------------------------------------------------------
@dataclass(frozen=True)
class FramePlan:
    media_type: str
    transfer_syntax_uid: str
    decode: bool
    # A single frame asked for with a plain (not multipart/related) media type goes out
    # as that media type alone (PS3.18 §8.7.3.1); wildcards keep the multipart form.
    single_part: bool = False


def plan_frames(ranges: list[MediaRange], stored: str, usable: bool) -> FramePlan:
    """Pick how frames stored in ``stored`` are sent (PS3.18 §8.7.3.3, Table 8.7.3-5)."""
    native = is_native(stored)
    decoded = FramePlan(OCTET_STREAM, EXPLICIT_VR_LITTLE_ENDIAN, decode=True)
    as_stored = FramePlan(
        OCTET_STREAM if native else frame_media_type(stored),
        EXPLICIT_VR_LITTLE_ENDIAN if native else stored,
        decode=not usable,
    )
    for media in ranges:
        single = not media.multipart and not media.is_wildcard
        wanted = media.transfer_syntax
        if media.matches(as_stored.media_type) and wanted in (
            None,
            "*",
            as_stored.transfer_syntax_uid,
        ):
            return replace(as_stored, single_part=single)
        if media.media_type != OCTET_STREAM:
            continue
        if wanted == "*":  # any syntax, labelled as octet-stream with its real syntax
            return replace(as_stored, media_type=OCTET_STREAM, single_part=single)
        if wanted in (None, EXPLICIT_VR_LITTLE_ENDIAN) and can_decode(stored):
            return replace(decoded, single_part=single)
    raise NotAcceptable(
        f"frames are stored as {stored}; none of {describe(ranges)} can be produced"
    )


def _frame_chunks(
    handle: BinaryIO, pixel: PixelData | None, numbers: list[int], frames: int, decode: bool
) -> Iterator[bytes]:
    with handle:
        if decode or pixel is None:
            yield from decoded_frames(handle, numbers, frames)
        else:
            yield from stored_frames(handle, pixel, numbers)


def _frames_response(
    request: Request, storage: BlobStorage, instance: StoredInstance, numbers: list[int] | None
) -> StreamingResponse:
    handle = storage.open(instance.blob_key)
    try:
        header, pixel = read_pixel_data(handle)
        frames = int(header.get("NumberOfFrames") or 1)
        numbers = numbers or list(range(1, frames + 1))
        _check_frame_numbers(numbers, frames, instance.transfer_syntax_uid)
        usable = stored_bytes_usable(instance.transfer_syntax_uid, pixel)
        plan = plan_frames(accepted(request), instance.transfer_syntax_uid, usable)
    except BaseException:
        handle.close()
        raise
    content_type = content_type_for_part(plan.media_type, plan.transfer_syntax_uid)
    chunks = _frame_chunks(handle, pixel, numbers, frames, plan.decode)
    if plan.single_part and len(numbers) == 1:
        return StreamingResponse(chunks, media_type=content_type)
    parts = (Part(content_type, [chunk]) for chunk in chunks)
    return multipart_response(parts, plan.media_type)


def _check_frame_numbers(numbers: list[int], frames: int, syntax: str) -> None:
    if frame_media_type(syntax).startswith("video/"):
        return  # one stream: every frame number names it
    beyond = [n for n in numbers if n > frames]
    if beyond:
        raise NotFound(f"frame {beyond[0]} does not exist: the instance has {frames} frames")


@router.get(INSTANCE + "/frames/{frames}", summary="Retrieve Frames")
def retrieve_frames(
    study: str,
    series: str,
    instance: str,
    frames: str,
    request: Request,
    catalog: ScopedCatalogDep,
    storage: StorageDep,
    limits: LimitsDep,
) -> Response:
    stored = one_instance(catalog, study, series, instance)
    numbers = parse_frame_list(frames, limits.max_frames_per_request)
    return _frames_response(request, storage, stored, numbers)


@router.get(INSTANCE + "/pixeldata", summary="Retrieve Instance Pixel Data")
def retrieve_pixel_data(
    study: str,
    series: str,
    instance: str,
    request: Request,
    catalog: ScopedCatalogDep,
    storage: StorageDep,
) -> Response:
    return _frames_response(request, storage, one_instance(catalog, study, series, instance), None)


@router.get(INSTANCE + "/bulkdata/{path:path}", summary="Retrieve Bulkdata")
def retrieve_bulkdata(
    study: str,
    series: str,
    instance: str,
    path: str,
    request: Request,
    catalog: ScopedCatalogDep,
    storage: StorageDep,
) -> Response:
    """Bulk data by the path our metadata put in its BulkDataURI: ``<tag>(/<item>/<tag>)*``."""
    stored = one_instance(catalog, study, series, instance)
    segments = [s for s in path.split("/") if s]
    if len(segments) == 1 and segments[0].upper() in ("7FE00010", "7FE00008", "7FE00009"):
        return _pixel_value_response(request, storage, stored)
    with storage.open(stored.blob_key) as handle:
        value = _walk(pydicom.dcmread(handle, stop_before_pixels=True), segments)
    _require_octet_stream(request)
    return multipart_response([Part(OCTET_STREAM, [value])], OCTET_STREAM)


def _require_octet_stream(request: Request) -> None:
    if not any(m.matches(OCTET_STREAM) for m in accepted(request)):
        raise NotAcceptable("this bulk data is only available as application/octet-stream")


def _pixel_value_response(
    request: Request, storage: BlobStorage, instance: StoredInstance
) -> Response:
    """Native pixel data as one part, the value as stored; encapsulated as its frames."""
    with storage.open(instance.blob_key) as handle:
        _, pixel = read_pixel_data(handle)
    if (
        pixel is None
        or pixel.encapsulated
        or not stored_bytes_usable(instance.transfer_syntax_uid, pixel)
    ):
        return _frames_response(request, storage, instance, None)
    _require_octet_stream(request)
    offset, length = pixel.value_offset, pixel.value_length or 0

    def value() -> Iterator[bytes]:
        with storage.open(instance.blob_key) as handle:
            handle.seek(offset)
            remaining = length
            while remaining > 0 and (chunk := handle.read(min(remaining, 1024 * 1024))):
                remaining -= len(chunk)
                yield chunk

    part_type = content_type_for_part(OCTET_STREAM, EXPLICIT_VR_LITTLE_ENDIAN)
    return multipart_response([Part(part_type, value())], OCTET_STREAM)


def _walk(dataset: Dataset, segments: list[str]) -> bytes:
    if len(segments) % 2 == 0:
        raise Invalid(f"bulk data path {'/'.join(segments)!r} must end with a tag")
    node = dataset
    for position in range(0, len(segments) - 1, 2):
        sequence = node.get(_tag(segments[position]))
        index = int(segments[position + 1]) if segments[position + 1].isdecimal() else 0
        if sequence is None or sequence.VR != "SQ" or not 1 <= index <= len(sequence.value):
            raise NotFound(f"no bulk data at {'/'.join(segments)}")
        node = sequence.value[index - 1]
    element = node.get(_tag(segments[-1]))
    if element is None or not isinstance(element.value, bytes | bytearray):
        raise NotFound(f"no bulk data at {'/'.join(segments)}")
    return bytes(element.value)


def _tag(text: str) -> int:
    try:
        if len(text) != 8:
            raise ValueError(text)
        return int(text, 16)
    except ValueError as exc:
        raise Invalid(f"{text!r} is not a tag (8 hex digits)") from exc
