"""What `jip dicom upload` sends: files, folders and zips as multipart/form-data batches.

A batch is one request; its body is generated as it is sent (files read a chunk at a
time), with an exact Content-Length so the site can refuse an oversized upload before
reading it. Zips go alone, a folder's files in batches of :data:`BATCH_FILES` or
:data:`BATCH_BYTES`, whichever comes first: one lost request costs one batch, and the
result list grows as batches finish.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from jip.store.upload import is_zip

BATCH_FILES = 200
BATCH_BYTES = 256 * 1024 * 1024
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class UploadFile:
    path: Path
    name: str  # as the site reports it: relative to the folder given, folder included
    size: int


def collect(paths: Iterable[Path]) -> list[UploadFile]:
    """Every file under ``paths`` (folders recursively, in name order)."""
    files: list[UploadFile] = []
    for root in paths:
        if root.is_file():
            files.append(UploadFile(root, root.name, root.stat().st_size))
            continue
        base = root.resolve().parent
        for folder, dirs, names in os.walk(root):
            dirs.sort()
            for name in sorted(names):
                path = Path(folder) / name
                if path.is_file():
                    relative = path.resolve().relative_to(base).as_posix()
                    files.append(UploadFile(path, relative, path.stat().st_size))
    return files


def batches(files: list[UploadFile]) -> Iterator[list[UploadFile]]:
    """Zips alone, other files in batches of at most BATCH_FILES or BATCH_BYTES."""
    batch: list[UploadFile] = []
    size = 0
    for item in files:
        if is_zip(item.path):
            yield [item]
            continue
        if batch and (len(batch) >= BATCH_FILES or size + item.size > BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(item)
        size += item.size
    if batch:
        yield batch


class FormBody:
    """One batch as a multipart/form-data body, generated while it is sent."""

    def __init__(self, files: list[UploadFile]) -> None:
        self.files = files
        self.boundary = uuid.uuid4().hex
        self.content_type = f"multipart/form-data; boundary={self.boundary}"

    def _head(self, item: UploadFile) -> bytes:
        name = item.name.replace('"', "%22").replace("\r", " ").replace("\n", " ")
        return (
            f"--{self.boundary}\r\n"
            f'Content-Disposition: form-data; name="files"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()

    def _tail(self) -> bytes:
        return f"--{self.boundary}--\r\n".encode()

    def length(self) -> int:
        return sum(len(self._head(f)) + f.size + 2 for f in self.files) + len(self._tail())

    def chunks(self, sent: Callable[[int], None]) -> Iterator[bytes]:
        """The body; ``sent`` is told how many file bytes went out (for a progress bar)."""
        for item in self.files:
            yield self._head(item)
            with item.path.open("rb") as handle:
                while chunk := handle.read(_CHUNK):
                    yield chunk
                    sent(len(chunk))
            yield b"\r\n"
        yield self._tail()
