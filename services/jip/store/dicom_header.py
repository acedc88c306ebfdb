"""One pass over a Part 10 file's bytes: structure check plus the catalogued raw values.

The listener must refuse a cut file (pydicom reads one without raising), and it needs a
few dozen top-level values; walking the bytes once with ``struct`` does both without
building a pydicom Dataset. The buffer may be an ``mmap``: only element headers and the
captured values are touched, so a 500 MB pixel data value is skipped, never read.

The walk follows PS3.5 §7.1 (element encodings), §7.5 (items, delimiters) and §A.5
(deflate). Where pydicom would read the bytes differently from this walk (an element
switching to implicit VR, a top-level delimiter, command group elements...),
:attr:`Scan.odd` says why, and the caller lets pydicom read the whole file instead.
"""

from __future__ import annotations

import functools
import re
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

from pydicom.datadict import dictionary_VR
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian
from pydicom.valuerep import VR

from jip.errors import Invalid

_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
UNDEFINED_LENGTH = 0xFFFFFFFF
TRANSFER_SYNTAX_UID = 0x00020010
_ITEM = 0xFFFEE000
_ITEM_DELIMITER = 0xFFFEE00D
_SEQUENCE_DELIMITER = 0xFFFEE0DD
# Explicit VRs with a reserved field and a 4-byte length (PS3.5 §7.1.2).
_LONG_VRS = frozenset(
    (b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV")
)
# What pydicom reads as an explicit VR; anything else it reads as an implicit element.
_KNOWN_VRS = frozenset(vr.value.encode("ascii") for vr in VR)
_ORDERS: dict[bool, tuple[Any, Any, Any]] = {
    little: (
        struct.Struct(order + "HH").unpack_from,
        struct.Struct(order + "L").unpack_from,
        struct.Struct(order + "H").unpack_from,
    )
    for little, order in ((True, "<"), (False, ">"))
}


def check_uid(value: object, keyword: str) -> str:
    """A UID as PS3.5 §9.1 allows it (digits and dots, ≤ 64 chars), else :class:`Invalid`."""
    text = str(value or "").strip().rstrip("\x00")
    if not text:
        raise Invalid(f"{keyword} is missing")
    if len(text) > 64 or not _UID.match(text):
        raise Invalid(f"{keyword} {text[:80]!r} is not a valid DICOM UID")
    return text


def _cut(size: int, at: int) -> Invalid:
    return Invalid(f"truncated DICOM file: ends at byte {size} inside the element header at byte {at}")  # fmt: skip


def _overrun(tag: int, end: int, size: int) -> Invalid:
    return Invalid(f"truncated DICOM file: element {tag:08X} ends at byte {end}, file has {size}")


@dataclass
class Scan:
    """What one pass found: encoding, top-level element count and the wanted raw values."""

    transfer_syntax_uid: str
    implicit: bool
    little: bool
    # tag → (explicit VR or None, value bytes) of the wanted top-level elements; the
    # last occurrence wins, as in pydicom.
    values: dict[int, tuple[bytes | None, bytes]] = field(default_factory=dict)
    top_level_count: int = 0
    odd: str | None = None  # why only pydicom can say what the values are


class _Walker:
    """Steps over element headers of one buffer (PS3.5 §7.1, §7.5)."""

    def __init__(self, buffer: Any, size: int, little: bool) -> None:
        self.buffer = buffer
        self.size = size
        self.tag, self.u32, self.u16 = _ORDERS[little]
        self.odd: str | None = None

    def header(self, pos: int, implicit: bool) -> tuple[int, bytes | None, int, int]:
        """(tag, explicit VR, length, value position) of the element at ``pos``."""
        size, buffer = self.size, self.buffer
        if pos + 4 > size:
            raise _cut(size, pos)
        group, number = self.tag(buffer, pos)
        if implicit or group == 0xFFFE:  # items and delimiters carry no VR (PS3.5 §7.5)
            if pos + 8 > size:
                raise _cut(size, pos + 4)
            return (group << 16) | number, None, self.u32(buffer, pos + 4)[0], pos + 8
        if pos + 6 > size:
            raise _cut(size, pos + 4)
        vr = buffer[pos + 4 : pos + 6]
        if vr in _LONG_VRS:
            if pos + 12 > size:
                raise _cut(size, pos + 6)
            return (group << 16) | number, vr, self.u32(buffer, pos + 8)[0], pos + 12
        if vr not in _KNOWN_VRS:
            self.odd = f"unknown VR {vr!r}"
        if pos + 8 > size:
            raise _cut(size, pos + 6)
        return (group << 16) | number, vr, self.u16(buffer, pos + 6)[0], pos + 8

    def element(self, pos: int, implicit: bool) -> tuple[int, int]:
        """Step over one element, recursing into undefined-length values: (tag, end)."""
        tag, vr, length, value = self.header(pos, implicit)
        if tag >> 16 == 0xFFFE and tag != _ITEM_DELIMITER:
            self.odd = f"element {tag:08X} inside an item"  # pydicom reads it as data
        if length != UNDEFINED_LENGTH:
            end = value + length
            if end > self.size:
                raise _overrun(tag, end, self.size)
            return tag, end
        if tag >> 16 == 0xFFFE:
            return tag, value
        # SQ, encapsulated pixel data, or UN holding implicit VR items (PS3.5 §6.2.2)
        return tag, self.sequence(value, tag, implicit or vr == b"UN", _is_sequence(tag, vr))

    def sequence(self, pos: int, tag: int, implicit: bool, datasets: bool) -> int:
        """Step over the items of an undefined-length value up to its delimiter.

        ``datasets``: the items hold datasets (a sequence), not pixel data fragments.
        """
        size, buffer = self.size, self.buffer
        while True:
            if pos + 8 > size:
                raise _cut(size, pos)
            group, number = self.tag(buffer, pos)
            item_tag = (group << 16) | number
            length = self.u32(buffer, pos + 4)[0]
            pos += 8
            if item_tag == _SEQUENCE_DELIMITER:
                return pos
            if item_tag != _ITEM:
                raise Invalid(
                    f"malformed DICOM file: element {item_tag:08X} where sequence "
                    f"{tag:08X} needs an item"
                )
            if length != UNDEFINED_LENGTH:
                if pos + length > size:
                    raise _overrun(tag, pos + length, size)
                if datasets:
                    self.probe_item(pos, pos + length, implicit)
                pos += length
                continue
            item_implicit = self.found_implicit(pos, implicit)
            while True:
                item_tag, pos = self.element(pos, item_implicit)
                if item_tag == _ITEM_DELIMITER:
                    break

    def probe_item(self, pos: int, end: int, implicit: bool) -> None:
        """Notes in :attr:`odd` where pydicom would read this item's elements differently.

        A defined-length item needs no walk to be whole, but pydicom parses the items of
        an undefined-length sequence while reading the file, and fails on some it
        cannot step through.
        """
        implicit = self.found_implicit(pos, implicit)
        try:
            while pos < end:
                tag, pos = self.element(pos, implicit)
                if tag == _ITEM_DELIMITER:
                    break
        except Invalid as exc:
            self.odd = f"an item pydicom cannot read: {exc}"
            return
        if pos != end:
            self.odd = "an item whose elements do not end where it does"

    def found_implicit(self, pos: int, implicit: bool) -> bool:
        """Whether the dataset starting at ``pos`` is implicit VR.

        pydicom reads a dataset whose VR encoding contradicts its transfer syntax (it
        looks at the first element), so the structure check does the same.
        """
        if implicit or pos + 6 > self.size:
            return implicit
        if self.tag(self.buffer, pos)[0] == 0xFFFE:  # an empty item
            return implicit
        return not _uppercase(self.buffer[pos + 4 : pos + 6])


def _uppercase(vr: bytes) -> bool:
    return 0x40 < vr[0] < 0x5B and 0x40 < vr[1] < 0x5B


def scan(buffer: Any, wanted: frozenset[int]) -> Scan:
    """Check the structure of a Part 10 buffer and capture the ``wanted`` top-level values.

    Raises :class:`Invalid` naming what is wrong: not DICOM, cut short, malformed.
    """
    size = len(buffer)
    if size < 132:
        raise Invalid(f"not a DICOM file: only {size} bytes")
    if buffer[128:132] != b"DICM":
        raise Invalid("not a DICOM Part 10 file: no 'DICM' prefix at byte 128 (PS3.10 §7.1)")
    meta = _Walker(buffer, size, little=True)
    pos, syntax_raw = 132, None
    # pydicom reads File Meta Information whose first VR is no VR as implicit VR.
    meta_odd = "implicit VR File Meta Information" if meta.found_implicit(pos, False) else None
    while pos < size:
        if pos + 2 > size:
            raise _cut(size, pos)
        if meta.u16(buffer, pos)[0] != 0x0002:
            break
        tag, end = meta.element(pos, False)
        if tag == TRANSFER_SYNTAX_UID:  # a short-VR element
            syntax_raw = bytes(buffer[pos + 8 : end])
        pos = end
    if pos == 132:
        raise Invalid("not a DICOM Part 10 file: no File Meta Information after 'DICM'")
    result = _scan_dataset(buffer, pos, syntax_raw, wanted)
    result.odd = result.odd or meta_odd or meta.odd
    return result


@functools.lru_cache(maxsize=64)
def _encoding(syntax_raw: bytes | None) -> tuple[str, bool, bool, bool, str | None]:
    """(UID, implicit VR, little endian, deflated, why pydicom reads it otherwise)."""
    text = syntax_raw and syntax_raw.decode("ascii", "replace")
    syntax = UID(check_uid(text, "TransferSyntaxUID"))
    try:
        implicit, little = syntax.is_implicit_VR, syntax.is_little_endian
        deflated = syntax.is_deflated
    except ValueError:  # a private transfer syntax: explicit VR little endian (PS3.5 §10)
        implicit, little, deflated = False, True, False
    odd = None
    if syntax_raw is not None and syntax_raw.decode("latin-1").rstrip("\0 ") != syntax:
        odd = "padded transfer syntax UID"  # pydicom compares it unstripped
    if deflated and syntax != DeflatedExplicitVRLittleEndian:
        odd = "pydicom inflates only Deflated Explicit VR Little Endian"
    return str(syntax), implicit, little, deflated, odd


def _scan_dataset(buffer: Any, start: int, syntax_raw: bytes | None, wanted: frozenset[int]) -> Scan:  # fmt: skip
    syntax, implicit, little, deflated, odd = _encoding(syntax_raw)
    result = Scan(syntax, implicit, little, odd=odd)
    if deflated:
        buffer, start = _inflate(buffer, start), 0
    size = len(buffer)
    walker = _Walker(buffer, size, little)
    if start + 6 <= size and implicit and _uppercase(buffer[start + 4 : start + 6]):
        result.odd = "explicit VR dataset in an implicit VR transfer syntax"
    implicit = result.implicit = walker.found_implicit(start, implicit)
    values = result.values
    tag_of, u32, u16 = _ORDERS[little]
    pos, count = start, 0
    pydicom_stops_early = False  # pydicom seeks a delimiter in undefined-length non-SQ values
    while pos < size:
        count += 1
        # The common element headers inline (this loop runs for every top-level element).
        group, number = tag_of(buffer, pos) if pos + 8 <= size else (0, 0)
        if pos + 8 > size:
            tag, vr, length, value = walker.header(pos, implicit)
        elif implicit or group == 0xFFFE:
            tag, vr, length, value = (group << 16) | number, None, u32(buffer, pos + 4)[0], pos + 8
        elif (vr := buffer[pos + 4 : pos + 6]) in _LONG_VRS or vr not in _KNOWN_VRS:
            tag, vr, length, value = walker.header(pos, implicit)
        else:
            tag, length, value = (group << 16) | number, u16(buffer, pos + 6)[0], pos + 8
        if length != UNDEFINED_LENGTH:
            pos = value + length
            if pos > size:
                raise _overrun(tag, pos, size)
            if tag in wanted:
                values[tag] = (vr, bytes(buffer[value:pos]))
                if pydicom_stops_early:
                    result.odd = "a value after an undefined-length non-sequence element"
            elif tag >> 16 in (0x0000, 0xFFFE):
                result.odd = f"top-level element {tag:08X}"
            continue
        if tag >> 16 == 0xFFFE:
            result.odd = f"top-level element {tag:08X}"
            pos = value
            continue
        if tag in wanted:
            result.odd = f"undefined length of element {tag:08X}"
        datasets = _is_sequence(tag, vr)
        pydicom_stops_early = pydicom_stops_early or not datasets
        pos = walker.sequence(value, tag, implicit or vr == b"UN", datasets)
    result.top_level_count = count
    result.odd = result.odd or walker.odd
    return result


def _is_sequence(tag: int, vr: bytes | None) -> bool:
    """Whether pydicom parses this undefined-length value as items (else: delimiter search)."""
    if vr is not None:
        return vr in (b"SQ", b"UN")
    try:
        return dictionary_VR(tag) == "SQ"
    except KeyError:
        return True  # private or unknown: pydicom looks for items, as this walk does


def _inflate(buffer: Any, start: int) -> bytes:
    """The deflated dataset (PS3.5 §A.5); a cut deflate stream is :class:`Invalid`."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    out = bytearray()
    view = memoryview(buffer)
    try:
        for at in range(start, len(buffer), 1024 * 1024):
            out += inflater.decompress(view[at : at + 1024 * 1024])
            if inflater.eof:
                break
    except zlib.error as exc:
        raise Invalid(f"corrupt deflated DICOM dataset: {exc}") from exc
    finally:
        view.release()
    if not inflater.eof:
        raise Invalid("truncated DICOM file: the deflated dataset ends early")
    return bytes(out)
