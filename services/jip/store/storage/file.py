"""Filesystem blob storage (embedded shape): one file per key under a root directory.

Writes go to a temporary file in the root's ``.tmp`` folder (or arrive as a spool file)
and are given their name and fsync'ed, with the directory entry: the object is durable
when the call returns (``FileStorage._place`` says in which order, and why). The
C-STORE path instead stages each file (``stage_bytes`` writes a small one under its
key at once; ``stage`` links a spooled one) and flushes a whole batch's folders at once
(``FileStorage.flush``), so that concurrent associations share the disk's flushes.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO, TypeVar

from jip.errors import NotFound, OutOfResources
from jip.store.storage.port import StagedBlob, check_key

T = TypeVar("T")

# fsyncs of one flush at most at once: beyond the instances one batch usually holds.
_FLUSHERS = 16


class FileStorage:
    """Blob storage in a local directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp_dir = root / ".tmp"
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self._flushers: ThreadPoolExecutor | None = None  # made by the first flush
        self._new_names_flushed_with_file = fsync_keeps_new_names(root)
        self._flushers_made = threading.Lock()

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

    def stage(self, key: str, source: Path) -> StagedBlob:
        """Link ``source`` under ``key`` now; its bytes and name are flushed by :meth:`flush`.

        Where the name exists already (a duplicate, a fragment of a crash) or the
        filesystem has no hard links, the object is placed durably at once, as
        :meth:`move_in` does: a stored object is only ever replaced by flushed bytes.
        """
        target = self._path(key)
        try:
            try:
                linked = self._in_folder(functools.partial(_link, source, target), target, source)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                self.move_in(key, source)  # another filesystem: copied, durable now
                return StagedBlob(key, source)
            if not linked:
                self._place(source, target)
                return StagedBlob(key, source)
        except OSError as exc:
            raise _storage_error(exc, key) from exc
        return StagedBlob(key, source, target)

    def stage_bytes(self, key: str, data: bytes) -> StagedBlob:
        """Write ``data`` under ``key`` and fsync it on the calling thread; the folder's
        flush is left to :meth:`flush`, where the file's does not cover its new name
        (:func:`fsync_keeps_new_names`).

        Why not a spool file linked into place (:meth:`stage`): the file is made where
        it stays, so no second name is made and removed, and no spool folder written
        back (on ext4 without a journal, a new file's fsync writes the folder it was
        made in too). A name that exists (a duplicate, a fragment of a crash) is
        replaced by flushed bytes at once, as :meth:`stage` does. A crash before this
        returns may leave a fragment under the key: nothing refers to it yet (the
        catalog row comes after the flush) and the next store of the key replaces it.
        """
        target = self._path(key)
        try:
            try:
                fd = self._in_folder(functools.partial(_create, target), target)
            except FileExistsError:
                self.put_bytes(key, data)
                return StagedBlob(key, None)
            staged = StagedBlob(key, None, target, bytes_flushed=True)
            try:
                staged = replace(staged, inode=os.fstat(fd).st_ino)
                _write_all(fd, data)
                os.fsync(fd)
            except BaseException:
                _withdraw(staged)  # the fragment, unless a duplicate's bytes replaced it
                raise
            finally:
                os.close(fd)
        except OSError as exc:
            raise _storage_error(exc, key) from exc
        if self._new_names_flushed_with_file:
            return StagedBlob(key, None)  # name and bytes durable: nothing left to flush
        return staged

    def flush_bytes(self, staged: StagedBlob) -> StagedBlob:
        """fsync one staged file on the calling thread; its folder is left to :meth:`flush`.

        Why: the receiving thread flushing its own file costs no hand-off to a pool
        thread and back (measured: the fsync pool's wake-ups were a good part of the
        CPU per instance with many senders); concurrent fsyncs still share ext4's
        journal commit. On failure the staged names are withdrawn.
        """
        if staged.target is None or staged.bytes_flushed:
            return staged
        assert staged.source is not None  # only stage_bytes makes none, flushed
        try:
            _fsync(staged.source)
        except OSError as exc:
            _withdraw(staged)
            raise _storage_error(exc, staged.key) from exc
        return StagedBlob(staged.key, staged.source, staged.target, bytes_flushed=True)

    def flush(self, staged: Sequence[StagedBlob]) -> None:
        """fsync the staged files (those not flushed yet) and each of their folders,
        side by side; the spool names go.

        On failure every staged name is withdrawn (never retried, see the port).
        """
        pending = [blob for blob in staged if blob.target is not None]
        if not pending:
            return
        folders = dict.fromkeys(blob.target.parent for blob in pending if blob.target)
        files = [blob.source for blob in pending if blob.source and not blob.bytes_flushed]
        try:
            self._fsync_together([*files, *folders])
        except OSError as exc:
            for blob in pending:
                _withdraw(blob)
            raise _storage_error(exc, pending[0].key) from exc
        for blob in pending:
            if blob.source is not None:
                blob.source.unlink(missing_ok=True)

    def _fsync_together(self, paths: Sequence[Path]) -> None:
        """fsync every path at once; raises the first error after all have finished.

        ext4's journal commits the fsyncs that wait at the same moment together, while
        fsyncs one after another each wait for a device flush of their own (measured
        here: eight small files plus their folder one after another 4-5x slower than
        side by side). A file's bytes and its new name are independent flushes; both
        end before the catalog row is written.
        """
        with self._flushers_made:
            if self._flushers is None:
                self._flushers = ThreadPoolExecutor(_FLUSHERS, thread_name_prefix="fsync")
        futures = [self._flushers.submit(_fsync, path) for path in paths[1:]]
        errors: list[OSError] = []
        try:
            _fsync(paths[0])  # this thread flushes one itself
        except OSError as exc:
            errors.append(exc)
        for future in futures:
            try:
                future.result()
            except OSError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

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
        if not self._in_folder(functools.partial(_link, source, target), target, source):
            _fsync(source)
            self._in_folder(functools.partial(os.replace, source, target), target, source)
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

    def _in_folder(self, make: Callable[[], T], target: Path, source: Path | None = None) -> T:
        """``make()`` the name ``target`` (from ``source``), making a missing folder (a
        new study or series) first.

        Trying first spares a mkdir per instance; the folders made are fsync'ed into
        their parents, so the new path survives a crash too.
        """
        try:
            return make()
        except FileNotFoundError:
            if source is not None and not source.exists():
                raise
        target.parent.mkdir(parents=True, exist_ok=True)
        folder = target.parent
        while folder != self.root and self.root in folder.parents:
            _fsync(folder.parent)
            folder = folder.parent
        return make()

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


# Filesystems on which fsync of a newly created file makes its directory entry durable
# too: ext4 (with a journal, the entry is in the transaction the fsync commits; without
# one, ext4_sync_parent writes the folder of a new entry), XFS (the log is forced up to
# the inode's last change, the create) and btrfs (the tree log records new names).
_NEW_NAMES_FLUSHED_WITH_FILE = frozenset({"ext4", "xfs", "btrfs"})


def fsync_keeps_new_names(path: Path, mounts: str | None = None) -> bool:
    """Whether the filesystem holding ``path`` makes a new file's name durable with the
    file's own fsync, so that the folder's fsync (a device flush of its own) can go.

    Unknown filesystems (NFS, FUSE, anything not listed) get the folder's fsync as POSIX
    asks. Read from ``mounts`` (``/proc/self/mounts``): the longest mount point above
    ``path``.
    """
    if mounts is None:
        try:
            mounts = Path("/proc/self/mounts").read_text()
        except OSError:
            return False
    resolved, found, fstype = path.resolve(), "", ""
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = resolved == Path(point) or Path(point) in resolved.parents
        if inside and len(point) >= len(found):
            found, fstype = point, fields[2]
    return fstype in _NEW_NAMES_FLUSHED_WITH_FILE


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


def _create(path: Path) -> int:
    """A new file at ``path``, open for writing; FileExistsError if the name exists."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)


def _write_all(fd: int, data: bytes) -> None:
    """Every byte of ``data`` (a write may take fewer at once)."""
    with memoryview(data) as view:
        written = 0
        while written < len(view):
            written += os.write(fd, view[written:])


def _fsync(path: Path) -> None:
    """fsync a file or a directory (the latter makes a new name in it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _withdraw(blob: StagedBlob) -> None:
    """Remove a staged object's names (its key only while it still names our bytes)."""
    with contextlib.suppress(OSError):
        if blob.target is not None and _names_ours(blob, blob.target):
            blob.target.unlink()
    if blob.source is not None:
        blob.source.unlink(missing_ok=True)


def _names_ours(blob: StagedBlob, target: Path) -> bool:
    """Whether ``target`` still names the file this blob wrote (not replaced meanwhile)."""
    if blob.source is not None:
        return os.path.samefile(blob.source, target)
    return blob.inode is not None and os.stat(target).st_ino == blob.inode


def _storage_error(exc: OSError, key: str) -> Exception:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EMFILE, errno.ENOMEM):
        # The cause first: a DIMSE Error Comment keeps 64 characters.
        return OutOfResources(f"{exc.strerror}; free disk space and retry (storing {key!r})")
    return exc
