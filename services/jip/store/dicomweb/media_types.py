"""Media types of DICOMweb and the transfer syntaxes behind them (PS3.18 §8.7).

Parses ``Accept`` (and the ``accept`` query parameter, PS3.18 §8.3.3.1) into media
ranges, unwrapping ``multipart/related; type="…"`` so that every range names the media
type of one part, and maps transfer syntaxes to the media types of their frames
(PS3.18 Table 8.7.3-5).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pydicom.uid import UID

from jip.errors import Invalid, NotAcceptable

DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
DICOM_XML = "application/dicom+xml"
JSON = "application/json"
OCTET_STREAM = "application/octet-stream"
MULTIPART_RELATED = "multipart/related"
WADL = "application/vnd.sun.wadl+xml"

EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
# Native (uncompressed) encodings; their frames are plain little-endian pixel bytes.
NATIVE_SYNTAXES = {
    IMPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    "1.2.840.10008.1.2.1.99",  # deflated
    "1.2.840.10008.1.2.2",  # big endian (retired)
}


def _family(media_type: str, *uids: str) -> dict[str, str]:
    return dict.fromkeys(uids, media_type)


# PS3.18 Table 8.7.3-5: the media type a compressed frame is sent as.
FRAME_MEDIA_TYPES: dict[str, str] = {
    **_family(
        "image/jpeg",
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.57",
        "1.2.840.10008.1.2.4.70",
    ),
    **_family("image/jls", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"),
    **_family("image/jp2", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"),
    **_family("image/jpx", "1.2.840.10008.1.2.4.92", "1.2.840.10008.1.2.4.93"),
    **_family(
        "image/jphc",
        "1.2.840.10008.1.2.4.201",
        "1.2.840.10008.1.2.4.202",
        "1.2.840.10008.1.2.4.203",
    ),
    **_family(
        "image/jxl", "1.2.840.10008.1.2.4.110", "1.2.840.10008.1.2.4.111", "1.2.840.10008.1.2.4.112"
    ),
    "1.2.840.10008.1.2.5": "image/dicom-rle",
    **_family(
        "video/mpeg2",
        "1.2.840.10008.1.2.4.100",
        "1.2.840.10008.1.2.4.100.1",
        "1.2.840.10008.1.2.4.101",
        "1.2.840.10008.1.2.4.101.1",
    ),
    **_family(
        "video/mp4",
        *(f"1.2.840.10008.1.2.4.{n}{s}" for n in range(102, 107) for s in ("", ".1")),
    ),
    **_family("video/H265", "1.2.840.10008.1.2.4.107", "1.2.840.10008.1.2.4.108"),
}
# Older names that clients still send (PS3.18 2017 and earlier used the x- forms).
MEDIA_TYPE_ALIASES = {"image/x-dicom-rle": "image/dicom-rle", "image/x-jls": "image/jls"}
VIDEO_SYNTAXES = {uid for uid, media in FRAME_MEDIA_TYPES.items() if media.startswith("video/")}


def frame_media_type(transfer_syntax_uid: str) -> str:
    """The media type of a frame stored in ``transfer_syntax_uid``."""
    return FRAME_MEDIA_TYPES.get(transfer_syntax_uid, OCTET_STREAM)


def is_native(transfer_syntax_uid: str) -> bool:
    return transfer_syntax_uid in NATIVE_SYNTAXES or not UID(transfer_syntax_uid).is_compressed


@dataclass(frozen=True)
class MediaRange:
    """One acceptable media type; ``multipart`` when it came as multipart/related."""

    media_type: str
    params: dict[str, str] = field(default_factory=dict)
    q: float = 1.0
    multipart: bool = False

    @property
    def transfer_syntax(self) -> str | None:
        return self.params.get("transfer-syntax")

    def matches(self, media_type: str) -> bool:
        """Whether ``media_type`` falls in this range (``*/*``, ``image/*`` or exact)."""
        mine = MEDIA_TYPE_ALIASES.get(self.media_type, self.media_type)
        if mine == "*/*":
            return True
        major, _, minor = mine.partition("/")
        if minor in ("*", ""):
            return media_type.partition("/")[0] == major
        return mine == media_type

    @property
    def is_wildcard(self) -> bool:
        return self.media_type == "*/*"


def _split(text: str, separator: str) -> list[str]:
    """Split on ``separator`` outside double quotes."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def _parse_one(text: str) -> MediaRange:
    media_type, *raw_params = _split(text, ";")
    params: dict[str, str] = {}
    for raw in raw_params:
        name, _, value = raw.partition("=")
        params[name.strip().lower()] = value.strip().strip('"').strip()
    try:
        q = float(params.pop("q", "1"))
    except ValueError as exc:
        raise Invalid(f"media range {text!r} has a non-numeric q value") from exc
    media_type = media_type.strip().lower()
    if media_type == MULTIPART_RELATED:
        inner = params.pop("type", "*/*").lower()
        params.pop("boundary", None)
        return MediaRange(inner, params, q, multipart=True)
    if "/" not in media_type and media_type != "*":
        raise Invalid(f"{text!r} is not a media type")
    return MediaRange("*/*" if media_type == "*" else media_type, params, q)


def parse_accept(header: str | None, query: Iterable[str] = ()) -> list[MediaRange]:
    """Media ranges from the ``accept`` query parameter (which wins) or the header.

    Best first: by q value, then in the order the client gave. Without either, ``*/*``.
    """
    texts = [t for value in query for t in _split(value, ",")]
    if not texts and header:
        texts = _split(header, ",")
    ranges = [_parse_one(t) for t in texts] or [MediaRange("*/*")]
    ranges = [r for r in ranges if r.q > 0]
    if not ranges:
        raise NotAcceptable("every media type in Accept has q=0")
    return sorted(ranges, key=lambda r: -r.q)


def choose(ranges: list[MediaRange], offered: list[str]) -> MediaRange:
    """The client's best range that one of ``offered`` satisfies; the range carries the
    offered type as ``media_type`` (wildcards resolved to the first offer)."""
    for media_range in ranges:
        for media_type in offered:
            if media_range.matches(media_type):
                return MediaRange(
                    media_type, media_range.params, media_range.q, media_range.multipart
                )
    raise NotAcceptable(
        f"none of the accepted media types ({describe(ranges)}) is available; "
        f"this resource offers {', '.join(offered)}"
    )


def describe(ranges: list[MediaRange]) -> str:
    return ", ".join(
        (f"multipart/related; type={r.media_type}" if r.multipart else r.media_type)
        + "".join(f"; {k}={v}" for k, v in r.params.items())
        for r in ranges
    )


def content_type_for_part(media_type: str, transfer_syntax_uid: str | None = None) -> str:
    if transfer_syntax_uid:
        return f"{media_type}; transfer-syntax={transfer_syntax_uid}"
    return media_type
