"""Frames of a stored instance, read from the file without loading all its pixel data.

A 500 MB multi-frame instance is normal (DESIGN.md), so a frame request seeks to the
pixel data value and reads only the frames asked for: native frames by offset,
encapsulated ones through the Basic or Extended Offset Table (PS3.5 §A.4). Decoding
to native pixels (for clients that accept only ``application/octet-stream``) uses
pydicom's decoders (pylibjpeg, openjpeg, Pillow); whole instances are transcoded in
:mod:`jip.store.dicomweb.transcoding`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames, get_frame
from pydicom.pixels import get_decoder, pixel_array
from pydicom.uid import UID

from jip.errors import Invalid, NotAcceptable, NotFound
from jip.store.dicomweb.media_types import (
    VIDEO_SYNTAXES,
)

_PIXEL_TAGS = {(0x7FE0, 0x0010), (0x7FE0, 0x0008), (0x7FE0, 0x0009)}
_UNDEFINED = 0xFFFFFFFF


@dataclass(frozen=True)
class PixelData:
    """Where the top-level pixel data value sits in a stored file and how it is laid out."""

    transfer_syntax_uid: str
    number_of_frames: int
    value_offset: int
    value_length: int | None  # None: undefined length (encapsulated)
    frame_length: int | None  # bytes of one native frame; None when not byte-aligned
    extended_offsets: tuple[bytes, bytes] | None

    @property
    def encapsulated(self) -> bool:
        return self.value_length is None


def parse_frame_list(text: str, max_frames: int) -> list[int]:
    """``"1,3,5"`` → ``[1, 3, 5]`` (PS3.18 §8.2: frame numbers are 1-based).

    A frame named twice is sent once (``1,1,1`` is one frame, not three), and at most
    ``max_frames`` distinct frames are served per request: the work one URL can ask for
    stays bounded.
    """
    items = text.split(",")
    if len(items) > 4 * max_frames:  # refuse absurd lists before converting them
        raise Invalid(_too_many(max_frames))
    try:
        numbers = list(dict.fromkeys(int(part) for part in items if part.strip()))
    except ValueError as exc:
        raise Invalid(f"frame list {text[:80]!r} is not comma-separated frame numbers") from exc
    if not numbers or any(n < 1 for n in numbers):
        raise Invalid(f"frame list {text[:80]!r} must name frame numbers from 1")
    if len(numbers) > max_frames:
        raise Invalid(_too_many(max_frames))
    return numbers


def _too_many(max_frames: int) -> str:
    return (
        f"a frame list names at most {max_frames} frames (store.dicomweb.max_frames_per_request); "
        "ask in several requests or use /pixeldata for all frames"
    )


def read_pixel_data(handle: BinaryIO) -> tuple[Dataset, PixelData | None]:
    """The header (everything before pixel data) and the pixel data layout.

    The layout is None for a deflated file, whose bytes cannot be addressed directly.
    """
    header = pydicom.dcmread(handle, stop_before_pixels=True)
    syntax = UID(str(header.file_meta.TransferSyntaxUID))
    if syntax.is_deflated:
        if "Rows" not in header:
            raise NotFound("instance has no pixel data")
        return header, None
    raw = handle.read(8)
    if len(raw) < 8:
        raise NotFound("instance has no pixel data")
    endian = "<" if syntax.is_little_endian else ">"
    group, elem = struct.unpack(f"{endian}HH", raw[:4])
    if (group, elem) not in _PIXEL_TAGS:
        raise NotFound("instance has no pixel data")
    if syntax.is_implicit_VR:
        (length,) = struct.unpack(f"{endian}L", raw[4:8])
    else:
        (length,) = struct.unpack(f"{endian}L", handle.read(4))
    frames = int(header.get("NumberOfFrames") or 1)
    return header, PixelData(
        transfer_syntax_uid=str(syntax),
        number_of_frames=frames,
        value_offset=handle.tell(),
        value_length=None if length == _UNDEFINED else length,
        frame_length=_native_frame_length(header),
        extended_offsets=_extended_offsets(header),
    )


def _native_frame_length(header: Dataset) -> int | None:
    bits = int(header.get("BitsAllocated") or 0)
    if bits < 8 or bits % 8:
        return None
    samples = int(header.get("SamplesPerPixel") or 1)
    return int(header.get("Rows") or 0) * int(header.get("Columns") or 0) * samples * bits // 8


def _extended_offsets(header: Dataset) -> tuple[bytes, bytes] | None:
    offsets, lengths = header.get("ExtendedOffsetTable"), header.get("ExtendedOffsetTableLengths")
    return (bytes(offsets), bytes(lengths)) if offsets and lengths else None


def check_frames(pixel: PixelData, numbers: Sequence[int]) -> None:
    beyond = [n for n in numbers if n > pixel.number_of_frames]
    if beyond and pixel.transfer_syntax_uid not in VIDEO_SYNTAXES:
        raise NotFound(
            f"frame {beyond[0]} does not exist: the instance has {pixel.number_of_frames} frames"
        )


def stored_frames(handle: BinaryIO, pixel: PixelData, numbers: Sequence[int]) -> Iterator[bytes]:
    """The requested frames exactly as stored (compressed bitstreams stay compressed).

    A video instance is one stream, so any frame request yields the whole stream
    (PS3.18 §8.7.3.3.2).
    """
    check_frames(pixel, numbers)
    if not pixel.encapsulated:
        yield from _native_stored(handle, pixel, numbers)
        return
    handle.seek(pixel.value_offset)
    if pixel.transfer_syntax_uid in VIDEO_SYNTAXES:
        yield b"".join(generate_frames(handle, number_of_frames=1))
        return
    if len(numbers) == 1:
        yield _one_encapsulated(handle, pixel, numbers[0] - 1)
        return
    wanted = set(numbers)
    found: dict[int, bytes] = {}
    frames = generate_frames(
        handle, number_of_frames=pixel.number_of_frames, extended_offsets=pixel.extended_offsets
    )
    for number, frame in enumerate(frames, start=1):
        if number in wanted:
            found[number] = frame
            if len(found) == len(wanted):
                break
    for number in numbers:
        yield found[number]


def _one_encapsulated(handle: BinaryIO, pixel: PixelData, index: int) -> bytes:
    try:
        return get_frame(
            handle,
            index,
            number_of_frames=pixel.number_of_frames,
            extended_offsets=pixel.extended_offsets,
        )
    except ValueError as exc:
        raise NotFound(f"frame {index + 1} not found in the encapsulated pixel data") from exc


def _native_stored(handle: BinaryIO, pixel: PixelData, numbers: Sequence[int]) -> Iterator[bytes]:
    length = pixel.frame_length
    if length is None or pixel.value_length is None:
        raise Invalid("frames of bit-packed pixel data are only available through decoding")
    for number in numbers:
        handle.seek(pixel.value_offset + (number - 1) * length)
        frame = handle.read(length)
        if len(frame) != length:
            raise NotFound(f"frame {number} is beyond the end of the stored pixel data")
        yield frame


def can_decode(transfer_syntax_uid: str) -> bool:
    """Whether an installed decoder turns this syntax into native pixels."""
    syntax = UID(transfer_syntax_uid)
    if not syntax.is_compressed:
        return True
    try:
        return bool(get_decoder(syntax).is_available)
    except NotImplementedError:
        return False


def stored_bytes_usable(transfer_syntax_uid: str, pixel: PixelData | None) -> bool:
    """Whether stored frames can go out as they are (not deflated, big endian or bit-packed)."""
    if pixel is None or transfer_syntax_uid == "1.2.840.10008.1.2.2":
        return False
    return pixel.encapsulated or pixel.frame_length is not None


def decoded_frames(
    handle: BinaryIO, numbers: Sequence[int], number_of_frames: int
) -> Iterator[bytes]:
    """The requested frames as native little-endian pixels (Explicit VR Little Endian).

    Colour frames come out interleaved RGB (pydicom converts YBR on decoding).
    """
    beyond = [n for n in numbers if n > number_of_frames]
    if beyond:
        raise NotFound(
            f"frame {beyond[0]} does not exist: the instance has {number_of_frames} frames"
        )
    handle.seek(0)
    header = pydicom.dcmread(handle, stop_before_pixels=True)
    syntax = header.file_meta.TransferSyntaxUID
    if not can_decode(syntax):
        raise NotAcceptable(f"frames stored as {syntax} cannot be decoded on this server")
    handle.seek(0)
    source: Any = pydicom.dcmread(handle) if syntax.is_deflated else handle
    for number in numbers:
        if source is handle:
            handle.seek(0)
        array = pixel_array(source, index=number - 1)
        yield np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
