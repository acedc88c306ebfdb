"""DIMSE status codes by service class, named as the standard names them.

Handlers return these instead of bare hex values. Sources: PS3.7 Annex C (general
statuses), PS3.4 B.2.3 (Storage), C.4.1.1.4 (C-FIND), C.4.2.1.5 (C-MOVE) and
C.4.3.1.4 (C-GET).
"""

from __future__ import annotations

import enum

from pydicom.dataset import Dataset

# PS3.7 C.4.1: Error Comment is LO, at most 64 characters.
_ERROR_COMMENT_MAX = 64


class GeneralStatus(enum.IntEnum):
    """PS3.7 Annex C: statuses every DIMSE service may answer."""

    SUCCESS = 0x0000
    PROCESSING_FAILURE = 0x0110
    SOP_CLASS_NOT_SUPPORTED = 0x0122
    NOT_AUTHORISED = 0x0124


class StorageStatus(enum.IntEnum):
    """PS3.4 Table B.2-1, C-STORE responses."""

    SUCCESS = 0x0000
    OUT_OF_RESOURCES = 0xA700
    DATA_SET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    CANNOT_UNDERSTAND = 0xC000
    PROCESSING_FAILURE = 0x0110


class FindStatus(enum.IntEnum):
    """PS3.4 Table C.4-1, C-FIND responses."""

    SUCCESS = 0x0000
    PENDING = 0xFF00
    PENDING_OPTIONAL_KEYS_NOT_SUPPORTED = 0xFF01
    CANCEL = 0xFE00
    OUT_OF_RESOURCES = 0xA700
    IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    UNABLE_TO_PROCESS = 0xC000


class MoveStatus(enum.IntEnum):
    """PS3.4 Table C.4-2, C-MOVE responses."""

    SUCCESS = 0x0000
    PENDING = 0xFF00
    CANCEL = 0xFE00
    SUB_OPERATIONS_COMPLETE_WITH_FAILURES = 0xB000
    OUT_OF_RESOURCES_MATCHES = 0xA701
    OUT_OF_RESOURCES_SUB_OPERATIONS = 0xA702
    MOVE_DESTINATION_UNKNOWN = 0xA801
    IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    UNABLE_TO_PROCESS = 0xC000


class GetStatus(enum.IntEnum):
    """PS3.4 Table C.4-3, C-GET responses."""

    SUCCESS = 0x0000
    PENDING = 0xFF00
    CANCEL = 0xFE00
    SUB_OPERATIONS_COMPLETE_WITH_FAILURES = 0xB000
    OUT_OF_RESOURCES_MATCHES = 0xA701
    OUT_OF_RESOURCES_SUB_OPERATIONS = 0xA702
    IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    UNABLE_TO_PROCESS = 0xC000


def is_pending(status: int) -> bool:
    return status in (0xFF00, 0xFF01)


def is_success(status: int) -> bool:
    return status == 0x0000


def is_warning(status: int) -> bool:
    """PS3.4: 0001 and Bxxx are warnings (the operation was performed)."""
    return status == 0x0001 or 0xB000 <= status <= 0xBFFF


def status_dataset(status: int, comment: str = "") -> Dataset:
    """A status with an Error Comment (0000,0902), trimmed to its LO length."""
    ds = Dataset()
    ds.Status = int(status)
    if comment:
        ds.ErrorComment = error_comment(comment)
    return ds


def error_comment(text: str) -> str:
    """Text fit for Error Comment: LO, one value (no backslash), at most 64 characters."""
    return text.replace("\\", "/")[:_ERROR_COMMENT_MAX]
