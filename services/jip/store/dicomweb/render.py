"""Rendered and thumbnail resources of WADO-RS (PS3.18 §10.4.1.1.3, §10.4.1.1.4).

Rendered instances and frames are one consumer image (JPEG by default, PNG or GIF on
request); a rendered series or study is a multipart of its instances' first frames.
A thumbnail is one small image: the middle image of a series, of the study's first
series with images.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from fastapi import APIRouter, Request
from fastapi.responses import Response

from jip.config import DicomWebSettings
from jip.errors import Invalid, NotAcceptable, NotFound
from jip.store.catalog.catalog import StoredInstance
from jip.store.deps import StorageDep
from jip.store.dicomweb.deps import LimitsDep, ScopedCatalogDep
from jip.store.dicomweb.frames import parse_frame_list
from jip.store.dicomweb.media_types import choose
from jip.store.dicomweb.multipart import Part
from jip.store.dicomweb.rendering import (
    RENDERED_MEDIA_TYPES,
    RenderOptions,
    parse_options,
    render,
    thumbnail_options,
)
from jip.store.dicomweb.targets import (
    accepted,
    by_series,
    multipart_response,
    one_instance,
    series_instances,
    study_instances,
)
from jip.store.storage.port import BlobStorage

router = APIRouter(tags=["dicomweb: rendered"])

STUDY = "/studies/{study}"
SERIES = STUDY + "/series/{series}"
INSTANCE = SERIES + "/instances/{instance}"
FRAMES = INSTANCE + "/frames/{frames}"


def _options(request: Request, limits: DicomWebSettings) -> RenderOptions:
    media = choose(accepted(request), RENDERED_MEDIA_TYPES)
    query = request.query_params
    return parse_options(
        media.media_type,
        quality=query.get("quality"),
        viewport=query.get("viewport"),
        window=query.get("window"),
        max_pixels=limits.max_rendered_pixels,
    )


def _render(
    storage: BlobStorage, instance: StoredInstance, frame: int, options: RenderOptions
) -> bytes:
    with storage.open(instance.blob_key) as handle:
        return render(handle, frame, options)


def _image(body: bytes, options: RenderOptions) -> Response:
    return Response(body, media_type=options.media_type)


def _images(instances: Sequence[StoredInstance]) -> list[StoredInstance]:
    """Instances with pixel data (the catalog records a frame count only for images)."""
    found = [i for i in instances if i.number_of_frames]
    if not found:
        raise NotFound("no image to render in the requested resource")
    return found


def _each_rendered(
    storage: BlobStorage, instances: Sequence[StoredInstance], options: RenderOptions
) -> Response:
    images = _images(instances)

    def parts() -> Iterator[Part]:
        for instance in images:
            try:
                body = _render(storage, instance, 1, options)
            except NotAcceptable:  # logged; the other images still go out
                continue
            yield Part(options.media_type, [body])

    return multipart_response(parts(), options.media_type)


def _representative(instances: Sequence[StoredInstance]) -> StoredInstance:
    """The middle image of the first series that has images."""
    for members in by_series(instances).values():
        images = [i for i in members if i.number_of_frames]
        if images:
            return images[len(images) // 2]
    raise NotFound("no image to render in the requested resource")


# -- rendered -----------------------------------------------------------------------------
@router.get(STUDY + "/rendered", summary="Retrieve Rendered Study")
def rendered_study(
    study: str,
    request: Request,
    catalog: ScopedCatalogDep,
    storage: StorageDep,
    limits: LimitsDep,
) -> Response:
    options = _options(request, limits)
    return _each_rendered(storage, study_instances(catalog, study), options)


@router.get(SERIES + "/rendered", summary="Retrieve Rendered Series")
def rendered_series(
    study: str,
    series: str,
    request: Request,
    catalog: ScopedCatalogDep,
    storage: StorageDep,
    limits: LimitsDep,
) -> Response:
    options = _options(request, limits)
    return _each_rendered(storage, series_instances(catalog, study, series), options)


@router.get(INSTANCE + "/rendered", summary="Retrieve Rendered Instance")
def rendered_instance(
    study: str,
    series: str,
    instance: str,
    request: Request,
    catalog: ScopedCatalogDep,
    storage: StorageDep,
    limits: LimitsDep,
) -> Response:
    options = _options(request, limits)
    stored = one_instance(catalog, study, series, instance)
    return _image(_render(storage, stored, 1, options), options)


@router.get(FRAMES + "/rendered", summary="Retrieve Rendered Frames")
def rendered_frames(
    study: str,
    series: str,
    instance: str,
    frames: str,
    request: Request,
    catalog: ScopedCatalogDep,
    storage: StorageDep,
    limits: LimitsDep,
) -> Response:
    options = _options(request, limits)
    stored = one_instance(catalog, study, series, instance)
    numbers = parse_frame_list(frames, limits.max_frames_per_request)
    frames_stored = stored.number_of_frames or 0
    beyond = [n for n in numbers if n > frames_stored]
    if beyond:
        raise NotFound(f"frame {beyond[0]} does not exist: the instance has {frames_stored} frames")
    # The first frame is rendered before the response starts: an image that cannot be
    # rendered is a status code, not a cut stream.
    first = _render(storage, stored, numbers[0], options)
    if len(numbers) == 1:
        return _image(first, options)

    def parts() -> Iterator[Part]:
        yield Part(options.media_type, [first])
        for number in numbers[1:]:
            try:
                body = _render(storage, stored, number, options)
            except NotAcceptable:  # logged; the other frames still go out
                continue
            yield Part(options.media_type, [body])

    return multipart_response(parts(), options.media_type)


# -- thumbnails ---------------------------------------------------------------------------
@router.get(STUDY + "/thumbnail", summary="Retrieve Study Thumbnail")
def study_thumbnail(
    study: str,
    request: Request,
    catalog: ScopedCatalogDep,
    storage: StorageDep,
    limits: LimitsDep,
) -> Response:
    options = thumbnail_options(_options(request, limits))
    chosen = _representative(study_instances(catalog, study))
    return _image(_render(storage, chosen, 1, options), options)


@router.get(SERIES + "/thumbnail", summary="Retrieve Series Thumbnail")
def series_thumbnail(
    study: str,
    series: str,
    request: Request,
    catalog: ScopedCatalogDep,
    storage: StorageDep,
    limits: LimitsDep,
) -> Response:
    options = thumbnail_options(_options(request, limits))
    chosen = _representative(series_instances(catalog, study, series))
    return _image(_render(storage, chosen, 1, options), options)


@router.get(INSTANCE + "/thumbnail", summary="Retrieve Instance Thumbnail")
def instance_thumbnail(
    study: str,
    series: str,
    instance: str,
    request: Request,
    catalog: ScopedCatalogDep,
    storage: StorageDep,
    limits: LimitsDep,
) -> Response:
    options = thumbnail_options(_options(request, limits))
    stored = one_instance(catalog, study, series, instance)
    return _image(_render(storage, stored, 1, options), options)


@router.get(FRAMES + "/thumbnail", summary="Retrieve Frame Thumbnail")
def frame_thumbnail(
    study: str,
    series: str,
    instance: str,
    frames: str,
    request: Request,
    catalog: ScopedCatalogDep,
    storage: StorageDep,
    limits: LimitsDep,
) -> Response:
    options = thumbnail_options(_options(request, limits))
    stored = one_instance(catalog, study, series, instance)
    numbers = parse_frame_list(frames, limits.max_frames_per_request)
    if len(numbers) != 1:
        raise Invalid("a thumbnail shows one frame: name exactly one frame number")
    return _image(_render(storage, stored, numbers[0], options), options)
