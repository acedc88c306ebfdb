"""Staging and one shared flush (the ingest's group commit of blobs), on every adapter.

``stage`` gives an object its key without waiting for the disk; ``flush`` makes a whole
batch durable at once, or withdraws every one of them. ``flush_bytes`` flushes one
object's own bytes on the receiving thread first, leaving the shared flush one fsync
per folder; its failure withdraws that object alone, and nothing is ever retried.
"""

from __future__ import annotations

import errno
import os
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from jip.errors import OutOfResources
from jip.store.storage import file as storage_file
from jip.store.storage.file import FileStorage
from jip.store.storage.port import BlobStorage, StagedBlob

KEYS = ("1.2/3.4/5.dcm", "1.2/3.4/6.dcm", "1.2/3.9/7.dcm")


def _spool(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / "spool" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    return path


def test_staged_objects_are_stored_once_flushed(blob_storage: BlobStorage, tmp_path: Path) -> None:
    sources = [_spool(tmp_path, f"{n}.part", f"object {n}".encode()) for n in range(3)]
    staged = [blob_storage.stage(key, source) for key, source in zip(KEYS, sources, strict=True)]
    blob_storage.flush(staged)
    for n, key in enumerate(KEYS):
        assert blob_storage.read_bytes(key) == f"object {n}".encode()
    assert not any(source.exists() for source in sources)  # the spool names are consumed
    blob_storage.flush([])  # an empty batch is nothing to do


def _staged_in_two_folders(tmp_path: Path) -> tuple[FileStorage, list[Path], list[StagedBlob]]:
    """File storage holding one object in each of two folders, and three staged beside."""
    storage = FileStorage(tmp_path / "blobs")
    storage.put_bytes("1.2/3.4/0.dcm", b"stored before")
    storage.put_bytes("1.2/3.9/0.dcm", b"stored before")
    sources = [_spool(tmp_path, f"{n}.part", f"object {n}".encode()) for n in range(3)]
    staged = [storage.stage(key, source) for key, source in zip(KEYS, sources, strict=True)]
    return storage, sources, staged


def _before_each_fsync(monkeypatch: pytest.MonkeyPatch, observe: Callable[[int], None]) -> None:
    """Call ``observe(fd)`` before each fsync of the file storage (it may raise instead)."""
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        observe(fd)
        real_fsync(fd)

    monkeypatch.setattr(storage_file.os, "fsync", fsync)


def test_a_flush_fsyncs_every_file_and_each_folder_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage, _, staged = _staged_in_two_folders(tmp_path)
    flushed: list[str] = []

    def record(fd: int) -> None:
        path = Path(os.readlink(f"/proc/self/fd/{fd}"))
        flushed.append(str(path.relative_to(storage.root)) if path.is_dir() else "file")

    _before_each_fsync(monkeypatch, record)
    storage.flush(staged)
    # Three files and their two folders, each once: not a folder fsync per instance.
    assert Counter(flushed) == {"file": 3, "1.2/3.4": 1, "1.2/3.9": 1}


def test_a_failed_flush_withdraws_every_staged_object(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage, sources, staged = _staged_in_two_folders(tmp_path)
    calls: list[int] = []

    def fail_the_second(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 2:  # one flush of the batch fails, the others succeed
            raise OSError(errno.EIO, "Input/output error")

    _before_each_fsync(monkeypatch, fail_the_second)
    with pytest.raises(OSError, match="Input/output error"):
        storage.flush(staged)
    monkeypatch.undo()
    assert sorted(storage.keys()) == ["1.2/3.4/0.dcm", "1.2/3.9/0.dcm"]
    assert not any(source.exists() for source in sources)
    assert storage.read_bytes("1.2/3.4/0.dcm") == b"stored before"


def test_a_full_disk_during_the_flush_is_out_of_resources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jip.errors import OutOfResources

    storage = FileStorage(tmp_path / "blobs")
    staged = [storage.stage(KEYS[0], _spool(tmp_path, "0.part", b"object"))]

    def full_disk(_fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(storage_file.os, "fsync", full_disk)
    with pytest.raises(OutOfResources, match="free disk space"):
        storage.flush(staged)
    monkeypatch.undo()
    assert list(storage.keys()) == []


def test_staging_over_an_existing_key_replaces_it_with_flushed_bytes_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stored object is never swapped for bytes still waiting for the flush."""
    storage = FileStorage(tmp_path / "blobs")
    storage.put_bytes(KEYS[0], b"a fragment a crash left")
    staged = storage.stage(KEYS[0], _spool(tmp_path, "0.part", b"the whole object"))
    assert storage.read_bytes(KEYS[0]) == b"the whole object"

    def no_more_fsyncs(_fd: int) -> None:
        raise AssertionError("nothing is left to flush")

    monkeypatch.setattr(storage_file.os, "fsync", no_more_fsyncs)
    storage.flush([staged])
    assert storage.read_bytes(KEYS[0]) == b"the whole object"


# -- flush_bytes: a file's own bytes flushed on the receiving thread ---------------------
def _record_fsyncs(monkeypatch: pytest.MonkeyPatch, root: Path) -> list[tuple[str, str]]:
    """(what, thread name) per fsync of the file storage: "file" or the folder's key."""
    flushed: list[tuple[str, str]] = []

    def record(fd: int) -> None:
        path = Path(os.readlink(f"/proc/self/fd/{fd}"))
        what = str(path.relative_to(root)) if path.is_dir() else "file"
        flushed.append((what, threading.current_thread().name))

    _before_each_fsync(monkeypatch, record)
    return flushed


def test_flushed_bytes_leave_only_the_folders_to_the_shared_flush(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = FileStorage(tmp_path / "blobs")
    storage.put_bytes("1.2/3.4/0.dcm", b"stored before")  # the folders exist
    storage.put_bytes("1.2/3.9/0.dcm", b"stored before")
    sources = [_spool(tmp_path, f"{n}.part", f"object {n}".encode()) for n in range(3)]
    flushed = _record_fsyncs(monkeypatch, storage.root)
    staged = [
        storage.flush_bytes(storage.stage(key, source))
        for key, source in zip(KEYS, sources, strict=True)
    ]
    here = threading.current_thread().name
    assert flushed == [("file", here)] * 3, "each file fsync'ed by the thread that staged it"
    assert all(blob.bytes_flushed for blob in staged)
    assert storage.flush_bytes(staged[0]) == staged[0]  # flushed once only
    flushed.clear()
    storage.flush(staged)
    assert Counter(what for what, _ in flushed) == {"1.2/3.4": 1, "1.2/3.9": 1}
    for n, key in enumerate(KEYS):
        assert storage.read_bytes(key) == f"object {n}".encode()
    assert not any(source.exists() for source in sources)


@pytest.mark.parametrize(("code", "raised"), [(errno.EIO, OSError), (errno.ENOSPC, OutOfResources)])
def test_a_failed_file_fsync_withdraws_that_object_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, raised: type[Exception]
) -> None:
    storage = FileStorage(tmp_path / "blobs")
    kept = storage.flush_bytes(storage.stage(KEYS[0], _spool(tmp_path, "0.part", b"kept")))
    source = _spool(tmp_path, "1.part", b"lost")
    failing = storage.stage(KEYS[1], source)

    def fails(_fd: int) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(storage_file.os, "fsync", fails)
    with pytest.raises(raised):
        storage.flush_bytes(failing)
    monkeypatch.undo()
    assert not source.exists() and not storage.exists(KEYS[1])
    storage.flush([kept])  # the other sender's object is unaffected
    assert list(storage.keys()) == [KEYS[0]]
    assert storage.read_bytes(KEYS[0]) == b"kept"


def test_flush_bytes_then_the_shared_flush_store_the_object_on_every_adapter(
    blob_storage: BlobStorage, tmp_path: Path
) -> None:
    """An S3 upload is durable when staged: flush_bytes has nothing left to do."""
    staged = blob_storage.stage(KEYS[0], _spool(tmp_path, "0.part", b"object"))
    flushed = blob_storage.flush_bytes(staged)
    if staged.target is None:
        assert flushed is staged
    else:
        assert flushed.bytes_flushed
    blob_storage.flush([flushed])
    assert blob_storage.read_bytes(KEYS[0]) == b"object"


# -- stage_bytes: bytes in memory, written once where they stay --------------------------
def test_bytes_staged_are_stored_once_flushed(blob_storage: BlobStorage) -> None:
    staged = [blob_storage.stage_bytes(key, f"object {n}".encode()) for n, key in enumerate(KEYS)]
    blob_storage.flush(staged)
    for n, key in enumerate(KEYS):
        assert blob_storage.read_bytes(key) == f"object {n}".encode()
    assert sorted(blob_storage.keys()) == sorted(KEYS)


def _storage_whose_fsyncs_keep_new_names(root: Path, keep: bool) -> FileStorage:
    storage = FileStorage(root)
    storage._new_names_flushed_with_file = keep  # as on the filesystem it would be on
    return storage


def test_staged_bytes_are_flushed_by_their_thread_and_their_folders_shared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No spool file: each object is made under its key, fsync'ed by the thread that
    staged it; on a filesystem where that fsync does not cover the new name, the
    shared flush has one fsync per folder left (a new folder is fsync'ed into its
    parent as it is made)."""
    storage = _storage_whose_fsyncs_keep_new_names(tmp_path / "blobs", False)
    storage.put_bytes("1.2/3.4/0.dcm", b"stored before")  # the folders exist
    storage.put_bytes("1.2/3.9/0.dcm", b"stored before")
    flushed = _record_fsyncs(monkeypatch, storage.root)
    staged = [storage.stage_bytes(key, f"object {n}".encode()) for n, key in enumerate(KEYS)]
    here = threading.current_thread().name
    assert flushed == [("file", here)] * 3
    assert all(blob.bytes_flushed and blob.source is None for blob in staged)
    assert storage.flush_bytes(staged[0]) == staged[0]
    flushed.clear()
    storage.flush(staged)
    assert Counter(what for what, _ in flushed) == {"1.2/3.4": 1, "1.2/3.9": 1}
    assert list(storage.tmp_dir.iterdir()) == []


def test_staging_bytes_over_an_existing_key_replaces_it_with_flushed_bytes_at_once(
    tmp_path: Path,
) -> None:
    storage = FileStorage(tmp_path / "blobs")
    storage.put_bytes(KEYS[0], b"a fragment a crash left")
    staged = storage.stage_bytes(KEYS[0], b"the whole object")
    assert storage.read_bytes(KEYS[0]) == b"the whole object"
    assert staged.target is None  # durable already: nothing left to flush
    assert list(storage.tmp_dir.iterdir()) == []


def test_a_full_disk_while_staging_bytes_leaves_no_fragment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = FileStorage(tmp_path / "blobs")

    def full_disk(fd: int, data: bytes) -> None:
        os.write(fd, data[:3])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(storage_file, "_write_all", full_disk)
    with pytest.raises(OutOfResources, match=r"^No space left on device; free disk space"):
        storage.stage_bytes(KEYS[0], b"the whole object")
    assert list(storage.keys()) == []


def test_a_failed_folder_flush_withdraws_staged_bytes_but_not_a_duplicates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Withdrawn: the name, while it still names the bytes this object wrote; bytes a
    concurrent duplicate put there since (whole, flushed) stay."""
    storage = _storage_whose_fsyncs_keep_new_names(tmp_path / "blobs", False)
    ours = storage.stage_bytes(KEYS[0], b"object 0")
    replaced = storage.stage_bytes(KEYS[1], b"object 1")
    storage.put_bytes(KEYS[1], b"object 1")  # a duplicate, stored whole meanwhile

    def failing(_fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(storage_file.os, "fsync", failing)
    with pytest.raises(OSError, match="Input/output error"):
        storage.flush([ours, replaced])
    monkeypatch.undo()
    assert list(storage.keys()) == [KEYS[1]]
    assert storage.read_bytes(KEYS[1]) == b"object 1"


def test_where_a_files_fsync_keeps_its_new_name_staged_bytes_are_durable_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = _storage_whose_fsyncs_keep_new_names(tmp_path / "blobs", True)
    storage.put_bytes("1.2/3.4/0.dcm", b"stored before")  # the folder exists
    flushed = _record_fsyncs(monkeypatch, storage.root)
    staged = storage.stage_bytes(KEYS[0], b"object 0")
    assert flushed == [("file", threading.current_thread().name)]
    assert staged.target is None  # nothing left for the shared flush
    flushed.clear()
    storage.flush([staged])
    assert flushed == []
    assert storage.read_bytes(KEYS[0]) == b"object 0"


MOUNTS = """\
/dev/vda / ext4 rw,relatime 0 0
proc /proc proc rw,nosuid 0 0
tmpfs /tmp tmpfs rw 0 0
/dev/vdb /srv/jip\\040data xfs rw 0 0
server:/export /srv/jip\\040data/nfs nfs4 rw 0 0
/dev/vdc /mnt/btrfs btrfs rw 0 0
"""


@pytest.mark.parametrize(
    ("path", "keeps"),
    [
        ("/var/lib/jip", True),  # ext4 at /
        ("/tmp/jip", False),  # tmpfs: nothing is durable, folder fsync as POSIX asks
        ("/srv/jip data/blobs", True),  # xfs, a space in the mount point
        ("/srv/jip data/nfs/blobs", False),  # NFS below it: the longest mount point wins
        ("/mnt/btrfs", True),
    ],
)
def test_which_filesystems_keep_a_new_name_with_the_files_fsync(path: str, keeps: bool) -> None:
    assert storage_file.fsync_keeps_new_names(Path(path), MOUNTS) is keeps
