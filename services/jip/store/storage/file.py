"""Filesystem blob storage (embedded shape): one file per key under a root directory.

Writes go to a temporary file in the root's ``.tmp`` folder (or arrive as a spool file)
and are given their name and fsync'ed, with the directory entry: the object is durable
when the call returns (``FileStorage._place`` says in which order, and why).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, TypeVar

from jip.errors import NotFound, OutOfResources
from jip.store.storage.port import check_key

T = TypeVar("T")


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
            try:
                self._place(source, target)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                # Different filesystem: copy into our tmp dir first, then place that.
                self._place(self._stage_copy(source), target)
                source.unlink(missing_ok=True)
        except OSError as exc:
            raise _storage_error(exc, key) from exc

    def put_bytes(self, key: str, data: bytes) -> None:
        target = self._path(key)
        try:
            fd, tmp = tempfile.mkstemp(dir=self.tmp_dir)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                self._place(Path(tmp), target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise _storage_error(exc, key) from exc

    def _place(self, source: Path, target: Path) -> None:
        """Give ``source`` the name ``target`` durably; returns once both are fsync'ed.

        A new name is linked first and the file fsync'ed after: on a journaling
        filesystem that one flush commits the bytes and the new name together, so the
        folder's own fsync finds nothing left to write (one flush fewer per instance
        than fsync, rename, fsync folder). A power cut before this returns may thus
        leave a fragment under a new name; nothing refers to it (the catalog row comes
        after) and the next store of the key replaces it; a failed fsync removes the
        name. An existing name is only ever replaced by bytes already fsync'ed, so a
        stored object is never exposed.
        """
        if not self._in_folder(_link, source, target):
            _fsync(source)
            self._in_folder(os.replace, source, target)
            _fsync(target.parent)
            return
        try:
            _fsync(target)
            _fsync(target.parent)
        except BaseException:
            with contextlib.suppress(OSError):
                if os.path.samefile(source, target):  # still ours, not replaced meanwhile
                    target.unlink()
            raise
        source.unlink()

    def _in_folder(self, move: Callable[[Path, Path], T], source: Path, target: Path) -> T:
        """``move(source, target)``, making a missing folder (a new study or series).

        Trying first spares a mkdir per instance; the folders made are fsync'ed into
        their parents, so the new path survives a crash too.
        """
        try:
            return move(source, target)
        except FileNotFoundError:
            if not source.exists():
                raise
        target.parent.mkdir(parents=True, exist_ok=True)
        folder = target.parent
        while folder != self.root and self.root in folder.parents:
            _fsync(folder.parent)
            folder = folder.parent
        return move(source, target)

    def _stage_copy(self, source: Path) -> Path:
        fd, tmp = tempfile.mkstemp(dir=self.tmp_dir)
        try:
            with os.fdopen(fd, "wb") as out, source.open("rb") as src:
                shutil.copyfileobj(src, out, 1024 * 1024)
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


# What link(2) answers on filesystems without hard links (FAT, some network mounts).
_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK}


def _link(source: Path, target: Path) -> bool:
    """Hard-link ``source`` as ``target``; False where the name exists already or the
    filesystem has no hard links (the caller then replaces with fsync'ed bytes)."""
    try:
        os.link(source, target)
        return True
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno in _NO_HARD_LINKS:
            return False
        raise


def _fsync(path: Path) -> None:
    """fsync a file or a directory (the latter makes a new name in it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _storage_error(exc: OSError, key: str) -> Exception:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EMFILE, errno.ENOMEM):
        return OutOfResources(f"cannot store {key!r}: {exc.strerror}; free disk space and retry")
    return exc
