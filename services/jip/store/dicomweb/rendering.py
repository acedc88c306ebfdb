"""Rendered frames (PS3.18 §8.3.5, §10.4.1.1.3): stored pixels → a consumer image.

The pipeline of PS3.3 §C.11: Modality LUT (rescale or LUT, per frame for enhanced
multi-frame objects), VOI LUT (the ``window`` query parameter, else the frame's or the
header's window, else a VOI LUT sequence, else the frame's value range), Presentation
LUT (MONOCHROME1 inverted), then the viewport and the JPEG/PNG/GIF encoder.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, pixel_array

from jip.errors import Invalid, JipError, NotAcceptable, NotFound

log = logging.getLogger(__name__)

RENDERED_MEDIA_TYPES = ["image/jpeg", "image/png", "image/gif"]
_PIL_FORMATS = {"image/jpeg": "JPEG", "image/png": "PNG", "image/gif": "GIF"}
THUMBNAIL_SIZE = (128, 128)


@dataclass(frozen=True)
class Window:
    center: float
    width: float
    function: str = "LINEAR"  # LINEAR, LINEAR_EXACT or SIGMOID (PS3.3 C.11.2.1.2)


@dataclass(frozen=True)
class Viewport:
    width: int
    height: int
    source: tuple[int, int, int, int] | None = None  # sx, sy, sw, sh


@dataclass(frozen=True)
class RenderOptions:
    media_type: str = "image/jpeg"
    quality: int = 90
    viewport: Viewport | None = None
    window: Window | None = None


def parse_options(
    media_type: str,
    *,
    quality: str | None,
    viewport: str | None,
    window: str | None,
    max_pixels: int,
) -> RenderOptions:
    """Options from the PS3.18 §8.3.5.1 query parameters; :class:`Invalid` names the bad one.

    A viewport scales the image up as well as down, so its area bounds the work:
    more than ``max_pixels`` (``store.dicomweb.max_rendered_pixels``) is refused.
    """
    return RenderOptions(
        media_type=media_type,
        quality=_quality(quality),
        viewport=_viewport(viewport, max_pixels),
        window=_window(window),
    )


def _quality(text: str | None) -> int:
    if text is None:
        return 90
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 1 <= value <= 100:
        raise Invalid(f"quality={text!r} must be an integer from 1 to 100")
    return value


def _viewport(text: str | None, max_pixels: int) -> Viewport | None:
    if not text:
        return None
    if len(text) > 200:
        raise Invalid("viewport must be vw,vh or vw,vh,sx,sy,sw,sh (at most 200 characters)")
    try:
        numbers = [int(float(v)) if v.strip() else 0 for v in text.split(",")]
    except (ValueError, OverflowError) as exc:  # "x", "nan", "inf"
        raise Invalid(f"viewport={text!r} must be vw,vh or vw,vh,sx,sy,sw,sh") from exc
    if len(numbers) not in (2, 6) or numbers[0] <= 0 or numbers[1] <= 0:
        raise Invalid(f"viewport={text!r} must be vw,vh or vw,vh,sx,sy,sw,sh with vw, vh > 0")
    if numbers[0] * numbers[1] > max_pixels:
        raise Invalid(
            f"viewport={text!r} asks for {numbers[0] * numbers[1]} pixels; at most {max_pixels} "
            "(store.dicomweb.max_rendered_pixels) are rendered: ask for a smaller viewport"
        )
    source = (numbers[2], numbers[3], numbers[4], numbers[5]) if len(numbers) == 6 else None
    return Viewport(numbers[0], numbers[1], source)


def _window(text: str | None) -> Window | None:
    if not text:
        return None
    parts = [p.strip() for p in text.split(",")]
    try:
        center, width = float(parts[0]), float(parts[1])
    except (IndexError, ValueError) as exc:
        raise Invalid(f"window={text!r} must be center,width[,function]") from exc
    function = (parts[2] if len(parts) > 2 else "linear").upper().replace("-", "_")
    if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID") or width <= 0:
        raise Invalid(f"window={text!r}: width must be > 0, function linear|linear-exact|sigmoid")
    return Window(center, width, function)


def render(handle: BinaryIO, frame_number: int, options: RenderOptions) -> bytes:
    """Frame ``frame_number`` (1-based) of the stored instance as ``options.media_type``.

    Stored data is what it is: a header or pixel data that cannot be read, decoded or
    rendered is a :class:`NotAcceptable` naming why (logged), never a server error.
    """
    try:
        header = pydicom.dcmread(handle, stop_before_pixels=True)
        if "Rows" not in header:
            raise NotFound("instance has no image to render")
        frames = int(header.get("NumberOfFrames") or 1)
        if not 1 <= frame_number <= frames:
            raise NotFound(f"frame {frame_number} does not exist: the instance has {frames} frames")
        handle.seek(0)
        source: Any = handle
        if header.file_meta.TransferSyntaxUID.is_deflated:
            source = pydicom.dcmread(handle)
        array = pixel_array(source, index=frame_number - 1)
        image = _to_image(array, header, frame_number - 1, options.window)
        fitted = _fit(image, options.viewport)
        return _encode(fitted, options)
    except JipError:
        raise
    except Exception as exc:
        log.warning("image not rendered", extra={"error": f"{type(exc).__name__}: {exc}"[:300]})
        raise NotAcceptable(
            f"the stored image cannot be rendered ({type(exc).__name__}: {str(exc)[:120]}); "
            "retrieve the instance or its frames instead"
        ) from exc


def _to_image(array: np.ndarray, header: Dataset, index: int, window: Window | None) -> Image.Image:
    photometric = str(header.get("PhotometricInterpretation", "MONOCHROME2"))
    if photometric == "PALETTE COLOR":
        return Image.fromarray(_to_uint8(apply_color_lut(array, header), 16), "RGB")
    if array.ndim == 3:
        bits = int(header.get("BitsStored") or header.get("BitsAllocated") or 8)
        return Image.fromarray(_to_uint8(array, bits), "RGB")
    values = _modality(array, header, index)
    shown = _voi(values, header, index, window)
    if photometric == "MONOCHROME1":
        shown = 255 - shown
    return Image.fromarray(shown, "L")


def _to_uint8(array: np.ndarray, bits: int) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    scale = 255.0 / float((1 << min(bits, 16)) - 1)
    return np.clip(array.astype(np.float64) * scale, 0, 255).astype(np.uint8)


def _frame_item(header: Dataset, index: int, sequence: str) -> Dataset | None:
    """The functional group ``sequence`` for frame ``index`` (per-frame, else shared)."""
    for groups, position in (
        ("PerFrameFunctionalGroupsSequence", index),
        ("SharedFunctionalGroupsSequence", 0),
    ):
        items = header.get(groups)
        if items and len(items) > position and sequence in items[position]:
            group = items[position][sequence]
            if group:
                item: Dataset = group[0]
                return item
    return None


def _modality(array: np.ndarray, header: Dataset, index: int) -> np.ndarray:
    item = _frame_item(header, index, "PixelValueTransformationSequence") or header
    if "RescaleSlope" in item or "RescaleIntercept" in item:
        slope = float(item.get("RescaleSlope") or 1)
        intercept = float(item.get("RescaleIntercept") or 0)
        return array.astype(np.float64) * slope + intercept
    if "ModalityLUTSequence" in header:
        return np.asarray(apply_modality_lut(array, header), dtype=np.float64)
    return array.astype(np.float64)


def _voi(values: np.ndarray, header: Dataset, index: int, window: Window | None) -> np.ndarray:
    window = window or _stored_window(header, index)
    if window is None and "VOILUTSequence" in header:
        mapped = np.asarray(apply_voi_lut(values.astype(np.int64), header), dtype=np.float64)
        return _stretch(mapped)
    if window is None:
        return _stretch(values)
    c, w = window.center, window.width
    if window.function == "SIGMOID":
        out = 255.0 / (1.0 + np.exp(-4.0 * (values - c) / w))
    elif window.function == "LINEAR_EXACT":
        out = ((values - c) / w + 0.5) * 255.0
    else:
        width = max(w - 1.0, 1.0)
        out = ((values - (c - 0.5)) / width + 0.5) * 255.0
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _stored_window(header: Dataset, index: int) -> Window | None:
    item = _frame_item(header, index, "FrameVOILUTSequence") or header
    center, width = item.get("WindowCenter"), item.get("WindowWidth")
    if center is None or width is None:
        return None
    first = lambda v: float(v[0] if isinstance(v, pydicom.multival.MultiValue) else v)  # noqa: E731
    try:
        c, w = first(center), first(width)
    except (TypeError, ValueError, IndexError):
        return None
    if w <= 0:
        return None
    function = str(item.get("VOILUTFunction") or "LINEAR").upper()
    return Window(c, w, function if function in ("LINEAR_EXACT", "SIGMOID") else "LINEAR")


def _stretch(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.clip((values - low) * (255.0 / (high - low)), 0, 255).astype(np.uint8)


def _fit(image: Image.Image, viewport: Viewport | None) -> Image.Image:
    """Crop to the viewport's source region, then scale to fit it, keeping aspect."""
    if viewport is None:
        return image
    if viewport.source is not None:
        sx, sy, sw, sh = viewport.source
        sw = sw or image.width - sx
        sh = sh or image.height - sy
        if sw <= 0 or sh <= 0 or sx < 0 or sy < 0:
            raise Invalid("viewport source region lies outside the image")
        image = image.crop((sx, sy, sx + sw, sy + sh))
    scale = min(viewport.width / image.width, viewport.height / image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS) if size != image.size else image


def thumbnail_options(options: RenderOptions) -> RenderOptions:
    """A thumbnail is a rendering that fits :data:`THUMBNAIL_SIZE` unless a viewport says."""
    if options.viewport is not None:
        return options
    return RenderOptions(
        options.media_type, options.quality, Viewport(*THUMBNAIL_SIZE), options.window
    )


def _encode(image: Image.Image, options: RenderOptions) -> bytes:
    out = io.BytesIO()
    kind = _PIL_FORMATS[options.media_type]
    if kind == "JPEG":
        image.save(out, kind, quality=options.quality)
    else:
        image.save(out, kind)
    return out.getvalue()
