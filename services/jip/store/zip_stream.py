"""The zip writer of downloads: members streamed out as they are written.

``zipfile`` writes to a sink that cannot seek, so it puts each member's sizes and CRC
in a data descriptor after the data (every unzip tool reads them), and each chunk is
handed on at once: neither the archive nor a member is ever held whole.
"""

from __future__ import annotations

import enum
import io
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from jip.store.catalog.catalog import StoredInstance
from jip.store.storage.port import BlobStorage

_CHUNK = 1024 * 1024


class ArchiveFormat(enum.StrEnum):
    """How image series go into the zip."""

    DICOM = "dicom"  # the instances as stored
    NIFTI = "nifti"  # one .nii.gz per image series; other series as stored DICOM


@dataclass
class ArchiveStats:
    """What went into an archive so far (for the audit entry and the manifest)."""

    series: int = 0
    instances: int = 0
    stored_bytes: int = 0  # of the instances read
    zip_bytes: int = 0  # written to the client
    nifti_series: int = 0
    notes: list[dict[str, str]] = field(default_factory=list)
    complete: bool = False

    def as_detail(self) -> dict[str, object]:
        return {
            "series": self.series,
            "instances": self.instances,
            "stored_bytes": self.stored_bytes,
            "zip_bytes": self.zip_bytes,
            "nifti_series": self.nifti_series,
            "complete": self.complete,
        }


class _Sink(io.RawIOBase):
    """A write-only, unseekable stream whose bytes are taken out after each write."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self._chunks.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data


class ZipStream:
    """Writes members one at a time and yields the archive's bytes as they are made."""

    def __init__(self, stats: ArchiveStats) -> None:
        self.stats = stats
        self._sink = _Sink()
        self._zip = zipfile.ZipFile(self._sink, "w", compression=zipfile.ZIP_STORED)

    def _take(self) -> bytes:
        data = self._sink.take()
        self.stats.zip_bytes += len(data)
        return data

    def member(self, name: str, source: BinaryIO, size: int) -> Iterator[bytes]:
        """Copy ``source`` (``size`` bytes) into the member ``name``, a chunk at a time."""
        info = zipfile.ZipInfo(name, date_time=time.localtime()[:6])
        info.file_size = size  # lets zipfile choose ZIP64 headers up front
        info.external_attr = 0o644 << 16  # -rw-r--r-- when unpacked
        with self._zip.open(info, "w") as out:
            while chunk := source.read(_CHUNK):
                out.write(chunk)
                yield self._take()
        yield self._take()

    def text(self, name: str, text: str) -> Iterator[bytes]:
        data = text.encode()
        yield from self.member(name, io.BytesIO(data), len(data))

    def close(self) -> Iterator[bytes]:
        self._zip.close()
        yield self._take()


@dataclass(frozen=True)
class SeriesSelection:
    """One series to archive: its instances (already limited to what the caller reads)
    and the folder it goes to inside the zip."""

    folder: str
    instances: list[StoredInstance]


def dicom_members(
    storage: BlobStorage, zs: ZipStream, selection: SeriesSelection
) -> Iterator[bytes]:
    """The series' instances as stored, ``<folder>/<SOPInstanceUID>.dcm``."""
    for instance in selection.instances:
        with storage.open(instance.blob_key) as source:
            yield from zs.member(
                f"{selection.folder}/{instance.sop_instance_uid}.dcm", source, instance.size_bytes
            )
        zs.stats.instances += 1
        zs.stats.stored_bytes += instance.size_bytes
