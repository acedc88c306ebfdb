"""The ingest header reader as it was before the one-pass walk: the reference it must match.

Kept verbatim (structure walk via ``tell``/``read``, then ``pydicom.dcmread`` and the
pydicom-based ``_header``), so that the equivalence tests compare the new reader with
what the listener used to accept, refuse and record.
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import BinaryIO

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from jip.errors import Invalid
from jip.store.dicom_file import InstanceHeader, _header, check_uid

_UNDEFINED_LENGTH = 0xFFFFFFFF


def reference_header(data: bytes) -> InstanceHeader:
    """What the old ``read_instance_bytes`` returned as header (or raised)."""
    return _read(io.BytesIO(data), len(data))[0]


def _read(handle: BinaryIO, size: int) -> tuple[InstanceHeader, Dataset]:
    if size < 132:
        raise Invalid(f"not a DICOM file: only {size} bytes")
    handle.seek(128)
    if handle.read(4) != b"DICM":
        raise Invalid("not a DICOM Part 10 file: no 'DICM' prefix at byte 128 (PS3.10 §7.1)")
    # pydicom reads a cut file with at most a warning, and warning filters are
    # process-wide (useless on the listener's threads): walk the element structure first.
    _check_complete(handle, size)
    handle.seek(0)
    try:
        dataset = pydicom.dcmread(handle, defer_size=1024)
    except InvalidDicomError as exc:
        raise Invalid(f"not a DICOM Part 10 file: {exc}") from exc
    except Exception as exc:
        raise Invalid(f"cannot parse DICOM file: {exc}") from exc
    if not dataset._dict:
        raise Invalid("DICOM file holds no dataset")
    try:
        return _header(dataset), dataset
    except Invalid:
        raise
    except Exception as exc:
        raise Invalid(f"cannot decode DICOM header: {exc}") from exc


def _check_complete(handle: BinaryIO, size: int) -> None:
    """Every element, item and delimiter is whole, and the last one ends at end of file."""
    handle.seek(132)
    meta = _ElementWalker(handle, size, implicit=False, little=True)
    syntax_value: bytes | None = None
    while handle.tell() < size and meta.peek_group() == 0x0002:
        at = handle.tell()
        if meta.element() == 0x00020010:  # Transfer Syntax UID, a short-VR element
            end = handle.tell()
            handle.seek(at + 8)
            syntax_value = handle.read(end - at - 8)
    start = handle.tell()
    if start == 132:
        raise Invalid("not a DICOM Part 10 file: no File Meta Information after 'DICM'")
    syntax = UID(
        check_uid(syntax_value and syntax_value.decode("ascii", "replace"), "TransferSyntaxUID")
    )
    try:
        implicit = syntax.is_implicit_VR
        little = syntax.is_little_endian
        deflated = syntax.is_deflated
    except ValueError:  # a private transfer syntax: explicit VR little endian (PS3.5 §10)
        implicit, little, deflated = False, True, False
    if deflated:
        handle = _inflate(handle, start)
        size, start = len(handle.getbuffer()), 0
    walker = _ElementWalker(handle, size, implicit=implicit, little=little)
    handle.seek(start)
    walker.implicit = walker.found_implicit(implicit)
    while handle.tell() < size:
        walker.element()


def _inflate(handle: BinaryIO, start: int) -> io.BytesIO:
    """The deflated dataset (PS3.5 §A.5); a cut deflate stream is :class:`Invalid`."""
    handle.seek(start)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    out = io.BytesIO()
    try:
        while not inflater.eof and (chunk := handle.read(1024 * 1024)):
            out.write(inflater.decompress(chunk))
    except zlib.error as exc:
        raise Invalid(f"corrupt deflated DICOM dataset: {exc}") from exc
    if not inflater.eof:
        raise Invalid("truncated DICOM file: the deflated dataset ends early")
    return out


_ITEM = 0xFFFEE000
_ITEM_DELIMITER = 0xFFFEE00D
_SEQUENCE_DELIMITER = 0xFFFEE0DD
# Explicit VRs with a reserved field and a 4-byte length (PS3.5 §7.1.2).
_LONG_VRS = frozenset(
    (b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV")
)


class _ElementWalker:
    """Steps over element headers (PS3.5 §7.1, §7.5) without reading any value."""

    def __init__(self, handle: BinaryIO, size: int, *, implicit: bool, little: bool) -> None:
        self.handle = handle
        self.size = size
        self.implicit = implicit
        self.order = "<" if little else ">"

    def _read(self, count: int) -> bytes:
        at = self.handle.tell()
        data = self.handle.read(count)
        if len(data) < count:
            raise Invalid(
                f"truncated DICOM file: ends at byte {self.size} inside the element "
                f"header at byte {at}"
            )
        return data

    def _skip(self, length: int, tag: int) -> None:
        end = self.handle.tell() + length
        if end > self.size:
            raise Invalid(
                f"truncated DICOM file: element {tag:08X} ends at byte {end}, file has {self.size}"
            )
        self.handle.seek(end)

    def found_implicit(self, implicit: bool) -> bool:
        """Whether the dataset starting here is implicit VR.

        pydicom reads a dataset whose VR encoding contradicts its transfer syntax (it
        looks at the first element), so the structure check does the same.
        """
        at = self.handle.tell()
        head = self.handle.read(6)
        self.handle.seek(at)
        if implicit or len(head) < 6:
            return implicit
        (group,) = struct.unpack(self.order + "H", head[:2])
        if group == 0xFFFE:  # an empty item
            return implicit
        return not (head[4:5].isupper() and head[5:6].isupper())

    def peek_group(self) -> int:
        at = self.handle.tell()
        group: int = struct.unpack(self.order + "H", self._read(2))[0]
        self.handle.seek(at)
        return group

    def element(self, implicit: bool | None = None) -> int:
        """Step over one element, recursing into undefined-length values; its tag."""
        implicit = self.implicit if implicit is None else implicit
        group, number = struct.unpack(self.order + "HH", self._read(4))
        tag = (group << 16) | number
        vr = b""
        if implicit or group == 0xFFFE:  # items and delimiters carry no VR (PS3.5 §7.5)
            (length,) = struct.unpack(self.order + "L", self._read(4))
        else:
            vr = self._read(2)
            if vr in _LONG_VRS:
                (length,) = struct.unpack(self.order + "2xL", self._read(6))
            else:
                (length,) = struct.unpack(self.order + "H", self._read(2))
        if length != _UNDEFINED_LENGTH:
            self._skip(length, tag)
        elif group != 0xFFFE:
            # SQ, encapsulated pixel data, or UN holding implicit VR items (PS3.5 §6.2.2)
            self._sequence(tag, implicit or vr == b"UN")
        return tag

    def _sequence(self, tag: int, implicit: bool) -> None:
        while True:
            group, number, length = struct.unpack(self.order + "HHL", self._read(8))
            item_tag = (group << 16) | number
            if item_tag == _SEQUENCE_DELIMITER:
                return
            if item_tag != _ITEM:
                raise Invalid(
                    f"malformed DICOM file: element {item_tag:08X} where sequence "
                    f"{tag:08X} needs an item"
                )
            if length != _UNDEFINED_LENGTH:
                self._skip(length, tag)
                continue
            item_implicit = self.found_implicit(implicit)
            while self.element(item_implicit) != _ITEM_DELIMITER:
                pass
