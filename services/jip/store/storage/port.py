"""The blob storage port: where encoded DICOM files and result files live.

Keys are relative, slash-separated paths built from validated UIDs
(``<study>/<series>/<sop>.<digest>.dcm``); adapters refuse anything else. Every write is
atomic and durable when the call returns, so a crash leaves either the old state or
the new object, never a fragment.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

from jip.errors import Invalid

_KEY = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")


def check_key(key: str) -> str:
    """Reject keys that could escape the storage root (``..``, absolute, odd chars)."""
    if not _KEY.match(key) or any(part in {".", ".."} for part in key.split("/")):
        raise Invalid(f"invalid storage key {key!r}")
    return key


class BlobStorage(Protocol):
    """Durable, atomic object storage."""

    def move_in(self, key: str, source: Path) -> None:
        """Take ownership of the local file ``source`` and store it under ``key``."""
        ...

    def put_bytes(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key``."""
        ...

    def read_bytes(self, key: str) -> bytes:
        """The whole object; raises NotFound."""
        ...

    def open(self, key: str) -> BinaryIO:
        """A readable binary stream over the object; raises NotFound."""
        ...

    def local_path(self, key: str) -> Path | None:
        """A local file path when the adapter has one (lets HTTP send files zero-copy)."""
        ...

    def size(self, key: str) -> int:
        """Object size in bytes; raises NotFound."""
        ...

    def exists(self, key: str) -> bool:
        """Whether ``key`` is stored."""
        ...

    def delete(self, key: str) -> None:
        """Remove ``key``; a missing key is not an error."""
        ...

    def keys(self, prefix: str = "") -> Iterator[str]:
        """All keys under ``prefix``."""
        ...
