"""Whole instances in another transfer syntax (WADO-RS ``application/dicom``).

PS3.18 §8.7.3.5.2 makes Explicit VR Little Endian the default syntax of an instance
asked for without a ``transfer-syntax`` parameter, so instances stored compressed (or
in Implicit VR, or deflated) are transcoded unless the client asks for ``*`` or their
stored syntax. Memory stays bounded where it can: a native little-endian instance is
re-encoded header only and its pixel data value streamed from the file (the pixel bytes
are the same in either VR encoding); a compressed one is decoded whole, one instance at
a time.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from typing import BinaryIO

import pydicom
from pydicom.uid import UID

from jip.errors import NotAcceptable, NotFound
from jip.store.dicomweb.frames import PixelData, can_decode, read_pixel_data
from jip.store.dicomweb.media_types import EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN

BIG_ENDIAN = "1.2.840.10008.1.2.2"
_CHUNK = 1024 * 1024


def can_transcode(stored_syntax_uid: str) -> bool:
    """Whether an instance stored in this syntax can be sent as native little endian.

    pydicom cannot rewrite (retired) Explicit VR Big Endian as little endian, and a
    syntax without an installed decoder (video, for one) cannot be decoded.
    """
    return stored_syntax_uid != BIG_ENDIAN and can_decode(stored_syntax_uid)


def transcoded_chunks(handle: BinaryIO, target_syntax_uid: str) -> Iterator[bytes]:
    """The instance in ``handle`` as native ``target_syntax_uid``; closes ``handle``.

    Raises :class:`NotAcceptable` (before the first chunk) where it cannot be done.
    """
    if target_syntax_uid not in (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN):
        handle.close()
        raise NotAcceptable(f"cannot transcode to transfer syntax {target_syntax_uid}")
    try:
        try:
            header, pixel = read_pixel_data(handle)
        except NotFound:  # no pixel data (an SR, say): re-encoded whole
            header, pixel = pydicom.Dataset(), None
        end = handle.seek(0, io.SEEK_END)
        streamable = (
            pixel is not None
            and not pixel.encapsulated
            and pixel.value_length is not None
            and pixel.value_offset + pixel.value_length == end  # nothing after pixel data
            and UID(pixel.transfer_syntax_uid).is_little_endian
        )
    except BaseException:
        handle.close()
        raise
    if pixel is not None and streamable:
        return _native_chunks(handle, header, pixel, target_syntax_uid)
    handle.seek(0)
    with handle:
        return iter([transcode_instance(handle, target_syntax_uid)])


def _native_chunks(
    handle: BinaryIO, header: pydicom.Dataset, pixel: PixelData, target_syntax_uid: str
) -> Iterator[bytes]:
    """Re-encode everything before the pixel data, then copy its value as stored."""
    header.file_meta.TransferSyntaxUID = UID(target_syntax_uid)
    out = io.BytesIO()
    header.save_as(out, enforce_file_format=True)
    length = pixel.value_length or 0
    if target_syntax_uid == IMPLICIT_VR_LITTLE_ENDIAN:
        element = struct.pack("<HHL", 0x7FE0, 0x0010, length)
    else:
        vr = b"OW" if int(header.get("BitsAllocated") or 8) > 8 else b"OB"
        element = struct.pack("<HH", 0x7FE0, 0x0010) + vr + struct.pack("<HL", 0, length)

    def chunks() -> Iterator[bytes]:
        with handle:
            yield out.getvalue() + element
            handle.seek(pixel.value_offset)
            remaining = length
            while remaining > 0 and (chunk := handle.read(min(remaining, _CHUNK))):
                remaining -= len(chunk)
                yield chunk

    return chunks()


def transcode_instance(handle: BinaryIO, target_syntax_uid: str) -> bytes:
    """The instance re-encoded as native ``target_syntax_uid`` (Explicit or Implicit VR LE).

    The SOP Instance UID is kept: decoding a lossless stream changes no pixel, and a
    lossy one was already lossy when it arrived (Lossy Image Compression stays set).
    """
    if target_syntax_uid not in (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN):
        raise NotAcceptable(f"cannot transcode to transfer syntax {target_syntax_uid}")
    dataset = pydicom.dcmread(handle)
    stored = dataset.file_meta.TransferSyntaxUID
    if stored == BIG_ENDIAN:
        raise NotAcceptable(f"instance stored as {stored} (big endian) cannot be transcoded")
    if stored.is_compressed:
        if not can_decode(stored):
            raise NotAcceptable(f"instance stored as {stored} cannot be decoded")
        dataset.decompress(generate_instance_uid=False)
    dataset.file_meta.TransferSyntaxUID = UID(target_syntax_uid)
    out = io.BytesIO()
    dataset.save_as(out, enforce_file_format=True)
    return out.getvalue()
