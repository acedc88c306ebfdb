"""The blob storage port: where encoded DICOM files and result files live.

Keys are relative, slash-separated paths built from validated UIDs
(``<study>/<series>/<sop>.<digest>.dcm``); adapters refuse anything else. Every write is
atomic and durable when the call returns, so a crash leaves either the old state or
the new object, never a fragment.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from jip.errors import Invalid

_KEY = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")


def check_key(key: str) -> str:
    """Reject keys that could escape the storage root (``..``, absolute, odd chars)."""
    if not _KEY.match(key) or any(part in {".", ".."} for part in key.split("/")):
        raise Invalid(f"invalid storage key {key!r}")
    return key


@dataclass(frozen=True)
class StagedBlob:
    """An object given its key by :meth:`BlobStorage.stage`, durable only once flushed.

    ``source`` is the file the bytes came in (the adapter's until the flush), None
    when they came in memory (:meth:`BlobStorage.stage_bytes`); ``target`` is where the
    adapter still has to make them durable, None when the object already is (an S3
    upload, a replaced name). ``bytes_flushed``: the file's own bytes are
    (:meth:`BlobStorage.flush_bytes`), only its name is left. ``inode``: the file
    written under ``target`` (no ``source`` to compare it with when withdrawn).
    """

    key: str
    source: Path | None
    target: Path | None = None
    bytes_flushed: bool = False
    inode: int | None = None


class BlobStorage(Protocol):
    """Durable, atomic object storage."""

    def move_in(self, key: str, source: Path) -> None:
        """Take ownership of the local file ``source`` and store it under ``key``."""
        ...

    def stage(self, key: str, source: Path) -> StagedBlob:
        """As :meth:`move_in`, but the object need not be durable before :meth:`flush`.

        Lets concurrent writers share one flush (group commit). Until then the object
        must not be referred to (no catalog row): a crash may lose it.
        """
        ...

    def stage_bytes(self, key: str, data: bytes) -> StagedBlob:
        """As :meth:`stage` for bytes in memory, which are flushed before it returns.

        Writes the object under its key at once (no spool file first); what
        :meth:`flush` has left is the names, shared with concurrent writers.
        """
        ...

    def flush_bytes(self, staged: StagedBlob) -> StagedBlob:
        """Make one staged object's own bytes durable now, on the calling thread.

        What :meth:`flush` then has left is the names, which concurrent writers share.
        On failure the object is withdrawn and the error raised (never retried).
        """
        ...

    def flush(self, staged: Sequence[StagedBlob]) -> None:
        """Make every staged object durable, sharing the flushes among them.

        All or nothing: if one cannot be made durable, none of them keeps its key
        (the caller answers each with a failure) and the error is raised. Nothing may
        retry a failed flush: after a failed fsync the kernel may report the same
        pages clean although they never reached the disk.
        """
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
