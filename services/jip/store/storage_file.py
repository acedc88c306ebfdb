"""Filesystem blob storage (embedded shape): one file per key under a root directory.

Writes go to a temporary file in the root's ``.tmp`` folder, are fsync'ed, renamed into
place and the directory entry fsync'ed: the object is durable when the call returns.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from jip.errors import NotFound, OutOfResources
from jip.store.storage import check_key


class FileStorage:
    """Blob storage in a local directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp_dir = root / ".tmp"
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def move_in(self, key: str, source: Path) -> None:
        target = self._path(key)
        try:
            _fsync(source)
            try:
                self._replace(source, target)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                # Different filesystem: copy into our tmp dir first, then rename.
                self._replace(self._stage_copy(source), target)
                source.unlink(missing_ok=True)
            _fsync(target.parent)
        except OSError as exc:
            raise _storage_error(exc, key) from exc

    def _replace(self, source: Path, target: Path) -> None:
        """Rename into place; a missing folder (a new study or series) is made first.

        Trying the rename first spares a mkdir per instance; the folders made are
        fsync'ed into their parents, so the new path survives a crash too.
        """
        try:
            os.replace(source, target)
            return
        except FileNotFoundError:
            if not source.exists():
                raise
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
        folder = target.parent
        while folder != self.root and self.root in folder.parents:
            _fsync(folder.parent)
            folder = folder.parent

    def put_bytes(self, key: str, data: bytes) -> None:
        target = self._path(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.tmp_dir)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            _fsync(target.parent)
        except OSError as exc:
            raise _storage_error(exc, key) from exc

    def _stage_copy(self, source: Path) -> Path:
        fd, tmp = tempfile.mkstemp(dir=self.tmp_dir)
        try:
            with os.fdopen(fd, "wb") as out, source.open("rb") as src:
                shutil.copyfileobj(src, out, 1024 * 1024)
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            Path(tmp).unlink(missing_ok=True)  # no fragment left behind in .tmp
            raise
        return Path(tmp)

    def read_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise NotFound(f"no stored object {key!r}") from exc

    def open(self, key: str) -> BinaryIO:
        try:
            return self._path(key).open("rb")
        except FileNotFoundError as exc:
            raise NotFound(f"no stored object {key!r}") from exc

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError as exc:
            raise NotFound(f"no stored object {key!r}") from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        path = self._path(key)
        path.unlink(missing_ok=True)
        # Prune empty parent folders up to the root; a concurrent writer may refill one.
        parent = path.parent
        while parent != self.root:
            with contextlib.suppress(OSError):
                parent.rmdir()
            parent = parent.parent

    def keys(self, prefix: str = "") -> Iterator[str]:
        # Checked like a key: "../" must not list files outside the root.
        base = self._path(prefix.rstrip("/")) if prefix.rstrip("/") else self.root
        if not base.exists():
            return
        for path in sorted(base.rglob("*")):
            if path.is_file() and self.tmp_dir not in path.parents:
                yield path.relative_to(self.root).as_posix()


def _fsync(path: Path) -> None:
    """fsync a file or a directory (the latter makes a rename durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _storage_error(exc: OSError, key: str) -> Exception:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EMFILE, errno.ENOMEM):
        return OutOfResources(f"cannot store {key!r}: {exc.strerror}; free disk space and retry")
    return exc
