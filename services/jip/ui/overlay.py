"""SEG overlays for the series viewer: the segments of a DICOM SEG drawn over its source.

The viewer stacks a transparent PNG per source image over the rendered frame. The SEG is
fetched over the site's own DICOMweb with the session's token, so project scopes apply
to every request; decoding it is the slow part, so the decoded masks are kept in a small
cache keyed by the SEG's SOP Instance UIDs, and scrolling costs one PNG encoding per
image. Frames are matched to source images by their source image reference (Derivation
Image Sequence, PS3.3 C.8.20.2.1) or, for frames without one, by Image Position
(Patient) (PS3.3 C.7.6.16.2.3).
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import numpy as np
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from starlette.concurrency import run_in_threadpool

from jip.store import boundary_of
from jip.ui.api import Api

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
DICOM_PARTS = 'multipart/related; type="application/dicom"'
# Used when a segment has no Recommended Display CIELab Value (Slicer's first colours).
PALETTE: tuple[tuple[int, int, int], ...] = (
    (241, 214, 145),
    (177, 122, 101),
    (111, 184, 210),
    (216, 101, 79),
    (221, 130, 101),
    (144, 238, 144),
    (192, 104, 88),
    (220, 245, 20),
)
Position = tuple[float, float, float]


class BadSeg(ValueError):
    """A SEG that cannot be drawn; the message says why and names the SEG."""


@dataclass(frozen=True)
class Segment:
    number: int
    label: str
    rgb: tuple[int, int, int]

    @property
    def color(self) -> str:
        return "#{:02x}{:02x}{:02x}".format(*self.rgb)


@dataclass(frozen=True)
class SegOverlay:
    """A decoded SEG: its segments and, per source SOP Instance UID, an alpha mask
    (0-255) per segment drawn on that image."""

    series_instance_uid: str
    description: str
    rows: int
    columns: int
    segments: tuple[Segment, ...]
    referenced_series: frozenset[str]
    frames: Mapping[str, tuple[tuple[int, np.ndarray], ...]]

    def png(self, instance: str, segments: Collection[int] | None = None) -> bytes:
        """An RGBA PNG of the chosen segments on one source image (transparent if none)."""
        colors = {s.number: s.rgb for s in self.segments}
        rgba = np.zeros((self.rows, self.columns, 4), dtype=np.uint8)
        for number, alpha in self.frames.get(instance, ()):
            if segments is not None and number not in segments:
                continue
            drawn = alpha > 0
            rgba[drawn, :3] = colors[number]
            rgba[drawn, 3] = alpha[drawn]
        out = io.BytesIO()
        Image.fromarray(rgba, mode="RGBA").save(out, format="PNG", optimize=False)
        return out.getvalue()


def decode(datasets: Sequence[Dataset], positions: Mapping[Position, str]) -> SegOverlay:
    """The overlay of a SEG series (one or more SEG instances) over its source images.

    ``positions`` maps a source image's Image Position (Patient) to its SOP Instance UID,
    for frames that do not name their source image.
    """
    if not datasets:
        raise BadSeg("the SEG series has no instances")
    first = datasets[0]
    rows, columns = int(first.get("Rows", 0)), int(first.get("Columns", 0))
    segments: dict[int, Segment] = {}
    frames: dict[str, list[tuple[int, np.ndarray]]] = {}
    referenced: set[str] = set()
    for ds in datasets:
        uid = str(ds.get("SOPInstanceUID", "?"))
        try:
            _check(ds, rows, columns)
            for segment in _segments(ds):
                segments.setdefault(segment.number, segment)
            referenced.update(
                str(item.SeriesInstanceUID) for item in ds.get("ReferencedSeriesSequence", [])
            )
            for source, number, alpha in _frames(ds, positions):
                frames.setdefault(source, []).append((number, alpha))
        except BadSeg as exc:
            raise BadSeg(f"SEG {uid}: {exc}") from None
        except (AttributeError, KeyError, IndexError, TypeError, ValueError) as exc:
            raise BadSeg(f"SEG {uid} cannot be read: {exc}") from None
    return SegOverlay(
        series_instance_uid=str(first.get("SeriesInstanceUID", "")),
        description=str(first.get("SeriesDescription", "") or "SEG"),
        rows=rows,
        columns=columns,
        segments=tuple(segments[n] for n in sorted(segments)),
        referenced_series=frozenset(referenced),
        frames={k: tuple(v) for k, v in frames.items()},
    )


def _check(ds: Dataset, rows: int, columns: int) -> None:
    if ds.get("SOPClassUID") != SEGMENTATION_STORAGE:
        raise BadSeg(f"not a Segmentation (SOP Class {ds.get('SOPClassUID', 'missing')})")
    kind = ds.get("SegmentationType")
    if kind not in ("BINARY", "FRACTIONAL"):
        raise BadSeg(f"Segmentation Type {kind!r} is not drawn (only BINARY and FRACTIONAL)")
    if (int(ds.get("Rows", 0)), int(ds.get("Columns", 0))) != (rows, columns) or not rows:
        raise BadSeg("its instances differ in size, or have no Rows/Columns")
    if "PixelData" not in ds:
        raise BadSeg("no Pixel Data")


def _segments(ds: Dataset) -> Iterable[Segment]:
    from highdicom.color import CIELabColor  # highdicom only when a SEG is drawn

    for item in ds.get("SegmentSequence", []):
        number = int(item.SegmentNumber)
        lab = item.get("RecommendedDisplayCIELabValue")
        rgb = (
            CIELabColor.from_dicom_value(tuple(int(v) for v in lab)).to_rgb()
            if lab is not None
            else PALETTE[(number - 1) % len(PALETTE)]
        )
        label = str(item.get("SegmentLabel", "") or f"Segment {number}")
        yield Segment(number, label, (int(rgb[0]), int(rgb[1]), int(rgb[2])))


def _frames(
    ds: Dataset, positions: Mapping[Position, str]
) -> Iterable[tuple[str, int, np.ndarray]]:
    """(source SOP Instance UID, segment number, alpha) for each frame that has a source."""
    pixels = ds.pixel_array
    count = int(ds.get("NumberOfFrames", 1))
    if count == 1:
        pixels = pixels[np.newaxis]
    per_frame = ds.get("PerFrameFunctionalGroupsSequence", [])
    if len(per_frame) != count or pixels.shape[0] != count:
        raise BadSeg(f"{count} frames but {len(per_frame)} per-frame functional groups")
    shared = (ds.get("SharedFunctionalGroupsSequence") or [Dataset()])[0]
    if ds.SegmentationType == "FRACTIONAL":
        scale = 255.0 / float(ds.get("MaximumFractionalValue", 255) or 255)
    else:
        scale = 255.0
    for index, group in enumerate(per_frame):
        numbers = _item(group, shared, "SegmentIdentificationSequence")
        if numbers is None:
            raise BadSeg(f"frame {index + 1} names no segment")
        source = _source_uid(group, shared)
        if source is None:
            position = _position(group, shared)
            source = positions.get(position) if position is not None else None
        if source is None:
            continue
        alpha = np.clip(np.rint(pixels[index].astype(np.float32) * scale), 0, 255)
        yield source, int(numbers.ReferencedSegmentNumber), alpha.astype(np.uint8)


def _item(group: Dataset, shared: Dataset, keyword: str) -> Dataset | None:
    for where in (group, shared):
        items = where.get(keyword)
        if items:
            first: Dataset = items[0]
            return first
    return None


def _source_uid(group: Dataset, shared: Dataset) -> str | None:
    derivation = _item(group, shared, "DerivationImageSequence")
    for source in derivation.get("SourceImageSequence", []) if derivation else []:
        uid = source.get("ReferencedSOPInstanceUID")
        if uid:
            return str(uid)
    return None


def _position(group: Dataset, shared: Dataset) -> Position | None:
    plane = _item(group, shared, "PlanePositionSequence")
    value = plane.get("ImagePositionPatient") if plane else None
    return position_key(value) if value else None


def position_key(value: Sequence[Any]) -> Position:
    """Image positions compared to 1/100 mm, as written values are rounded decimals."""
    x, y, z = (round(float(v), 2) for v in value)
    return (x, y, z)


# -- fetching over DICOMweb, cached --------------------------------------------------------
class _Cache:
    """A few decoded SEGs (or why they are bad), least recently used dropped first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.items: OrderedDict[tuple[str, ...], SegOverlay | BadSeg] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: tuple[str, ...]) -> SegOverlay | BadSeg | None:
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
            return self.items.get(key)

    def put(self, key: tuple[str, ...], value: SegOverlay | BadSeg) -> None:
        with self.lock:
            self.items[key] = value
            self.items.move_to_end(key)
            while len(self.items) > self.size:
                self.items.popitem(last=False)


CACHE = _Cache(size=8)


async def load(api: Api, study: str, series: str, seg_series: str) -> SegOverlay:
    """The overlay of ``seg_series`` on ``series``, as the session's user may see it.

    The instance search runs on every call, so a cached SEG is only handed to callers
    whose token still reaches it. Raises :class:`BadSeg` for a SEG that cannot be drawn.
    """
    base = f"/dicom-web/studies/{quote(study)}/series/{quote(seg_series)}"
    found = await api.get(f"{base}/instances", headers={"Accept": "application/dicom+json"})
    # The source series is part of the key: frames may be matched by its image positions.
    key = (series, *sorted(_first(item, "00080018") for item in found))
    overlay = CACHE.get(key)
    if overlay is None:
        response = await api.call("GET", base, headers={"Accept": DICOM_PARTS})
        parts = split_parts(response.content, response.headers.get("content-type", ""))
        positions = await _positions(api, study, series)
        overlay = await run_in_threadpool(_decode_parts, parts, positions)
        CACHE.put(key, overlay)
    if isinstance(overlay, BadSeg):
        raise overlay
    if series not in overlay.referenced_series:
        raise BadSeg(f"SEG series {seg_series} does not reference series {series}")
    return overlay


def _decode_parts(parts: list[bytes], positions: Mapping[Position, str]) -> SegOverlay | BadSeg:
    try:
        datasets = [dcmread(io.BytesIO(part)) for part in parts]
        return decode(datasets, positions)
    except BadSeg as exc:
        return exc
    except (InvalidDicomError, ValueError, AttributeError, KeyError, TypeError) as exc:
        return BadSeg(f"the SEG cannot be read: {exc}")


async def _positions(api: Api, study: str, series: str) -> dict[Position, str]:
    path = f"/dicom-web/studies/{quote(study)}/series/{quote(series)}/metadata"
    items = await api.get(path, headers={"Accept": "application/dicom+json"})
    found = {}
    for item in items:
        value = item.get("00200032", {}).get("Value")
        if value and len(value) == 3:
            found[position_key(value)] = _first(item, "00080018")
    return found


def _first(item: dict[str, Any], tag: str) -> str:
    return str((item.get(tag, {}).get("Value") or [""])[0])


def split_parts(body: bytes, content_type: str) -> list[bytes]:
    """The bodies of a multipart/related WADO-RS response (RFC 2046 section 5.1.1)."""
    boundary, _ = boundary_of(content_type)
    delimiter = b"\r\n--" + boundary.encode()
    chunks = (b"\r\n" + body).split(delimiter)[1:]
    parts = []
    for chunk in chunks:
        if chunk.startswith(b"--"):
            break
        _, _, part = chunk.partition(b"\r\n\r\n")
        parts.append(part)
    return parts
