"""The BlobStorage contract, run on every adapter (``blob_storage``: file and S3/moto)."""

from __future__ import annotations

import errno
import io
import os
import re
import socket
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pydicom
import pytest
from pydicom.data import get_testdata_file
from urllib3.exceptions import ProtocolError

from jip.backends import storage_for
from jip.config import Settings
from jip.errors import Invalid, NotFound, Unavailable
from jip.store.storage import file as storage_file
from jip.store.storage.file import FileStorage
from jip.store.storage.port import BlobStorage
from jip.store.storage.s3 import S3Storage

S3_ACCESS_KEY = "jip-test"  # moto takes any credentials
S3_SECRET_KEY = "jip-test-secret"
KEY = "1.2.3/1.2.3.4/1.2.3.4.5.0123456789abcdef.dcm"
BAD_KEYS = [
    "../escape.dcm",
    "1.2/../../escape.dcm",
    "/etc/passwd",
    "/abs/key.dcm",
    "a//b.dcm",
    "./a.dcm",
    "a/./b.dcm",
    "a/..",
    "..",
    "",
    "a\\b.dcm",
    "a b.dcm",
    "a/b.dcm/",
    "nul\x00.dcm",
]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _pattern(size: int, seed: int) -> bytes:
    """``size`` bytes that differ per ``seed`` and repeat with a prime period."""
    period = bytes((seed + i * 7) % 251 for i in range(251))
    return (period * (size // 251 + 1))[:size]


# -- put / read / open / size / exists / delete / keys / move_in --------------------------
def test_put_bytes_then_read_bytes_returns_the_same_bytes(blob_storage: BlobStorage) -> None:
    data = bytes(range(256)) * 100
    blob_storage.put_bytes(KEY, data)
    assert blob_storage.read_bytes(KEY) == data
    assert blob_storage.size(KEY) == len(data)
    assert blob_storage.exists(KEY)


def test_empty_object_is_stored(blob_storage: BlobStorage) -> None:
    blob_storage.put_bytes("empty.bin", b"")
    assert blob_storage.exists("empty.bin")
    assert blob_storage.read_bytes("empty.bin") == b""
    assert blob_storage.size("empty.bin") == 0
    with blob_storage.open("empty.bin") as stream:
        assert stream.read() == b""


def test_put_bytes_replaces_an_existing_object(blob_storage: BlobStorage) -> None:
    blob_storage.put_bytes(KEY, b"first version")
    blob_storage.put_bytes(KEY, b"second")
    assert blob_storage.read_bytes(KEY) == b"second"
    assert blob_storage.size(KEY) == len(b"second")


def test_open_streams_and_seeks(blob_storage: BlobStorage) -> None:
    data = _pattern(3 * 1024 * 1024 + 17, seed=3)
    blob_storage.put_bytes(KEY, data)
    with blob_storage.open(KEY) as stream:
        assert stream.read(10) == data[:10]
        assert stream.tell() == 10
        stream.seek(1000)  # a short forward seek
        assert stream.read(5) == data[1000:1005]
        stream.seek(2 * 1024 * 1024)  # a long one
        assert stream.read(100) == data[2 * 1024 * 1024 : 2 * 1024 * 1024 + 100]
        stream.seek(-7, io.SEEK_END)
        assert stream.read() == data[-7:]
        assert stream.read(1) == b""
        stream.seek(0)
        assert stream.read() == data


def test_open_stream_is_readable_by_pydicom_with_deferred_values(
    blob_storage: BlobStorage,
) -> None:
    path = Path(get_testdata_file("CT_small.dcm"))  # type: ignore[arg-type]
    blob_storage.put_bytes(KEY, path.read_bytes())
    expected = pydicom.dcmread(path)
    with blob_storage.open(KEY) as stream:
        # defer_size makes pydicom seek past large values and come back for them later.
        dataset = pydicom.dcmread(stream, defer_size=256)
        assert dataset.SOPInstanceUID == expected.SOPInstanceUID
        assert dataset.PixelData == expected.PixelData


def test_missing_key_is_not_found(blob_storage: BlobStorage) -> None:
    assert not blob_storage.exists(KEY)
    with pytest.raises(NotFound, match=re.escape("1.2.3.4.5")):
        blob_storage.read_bytes(KEY)
    with pytest.raises(NotFound):
        blob_storage.open(KEY)
    with pytest.raises(NotFound):
        blob_storage.size(KEY)


def test_delete_removes_the_object_and_a_missing_key_is_no_error(
    blob_storage: BlobStorage,
) -> None:
    blob_storage.put_bytes(KEY, b"x")
    blob_storage.put_bytes("1.2.3/other.dcm", b"y")
    blob_storage.delete(KEY)
    assert not blob_storage.exists(KEY)
    blob_storage.delete(KEY)
    blob_storage.delete("never/stored.dcm")
    assert list(blob_storage.keys()) == ["1.2.3/other.dcm"]


def test_keys_lists_every_object_under_a_folder_prefix(blob_storage: BlobStorage) -> None:
    stored = ["1.2/a.dcm", "1.2/3/b.dcm", "1.23/c.dcm", "9/d.dcm", "top.bin"]
    for key in stored:
        blob_storage.put_bytes(key, key.encode())
    assert sorted(blob_storage.keys()) == sorted(stored)
    # A prefix names a folder: "1.2" must not pick up "1.23/…".
    assert sorted(blob_storage.keys("1.2")) == ["1.2/3/b.dcm", "1.2/a.dcm"]
    assert sorted(blob_storage.keys("1.2/")) == ["1.2/3/b.dcm", "1.2/a.dcm"]
    assert list(blob_storage.keys("1.2/3")) == ["1.2/3/b.dcm"]
    assert list(blob_storage.keys("nothing")) == []


def test_move_in_stores_the_file_and_consumes_it(blob_storage: BlobStorage, tmp_path: Path) -> None:
    data = _pattern(100_000, seed=1)
    source = _write(tmp_path / "incoming.part", data)
    blob_storage.move_in(KEY, source)
    assert not source.exists()
    assert blob_storage.read_bytes(KEY) == data


def test_move_in_of_a_large_file_stores_it_whole(blob_storage: BlobStorage, tmp_path: Path) -> None:
    # Over 5 MiB: S3 uploads it in parts, which must come out as one object.
    data = _pattern(11 * 1024 * 1024 + 3, seed=2)
    blob_storage.move_in(KEY, _write(tmp_path / "big.part", data))
    assert blob_storage.size(KEY) == len(data)
    assert blob_storage.read_bytes(KEY) == data


# -- key validation ------------------------------------------------------------------------
@pytest.mark.parametrize("key", BAD_KEYS)
def test_unsafe_keys_are_refused_by_every_operation(
    blob_storage: BlobStorage, tmp_path: Path, key: str
) -> None:
    source = _write(tmp_path / "source.part", b"payload")
    operations: list[Any] = [
        lambda: blob_storage.put_bytes(key, b"payload"),
        lambda: blob_storage.move_in(key, source),
        lambda: blob_storage.read_bytes(key),
        lambda: blob_storage.open(key),
        lambda: blob_storage.size(key),
        lambda: blob_storage.exists(key),
        lambda: blob_storage.delete(key),
    ]
    for operation in operations:
        with pytest.raises(Invalid, match="invalid storage key"):
            operation()
    assert source.exists(), "a refused move_in must leave the source alone"
    assert list(blob_storage.keys()) == []
    assert not (tmp_path / "escape.dcm").exists()


@pytest.mark.parametrize("prefix", ["..", "../", "../../etc", "/etc", "a/../.."])
def test_unsafe_key_prefixes_are_refused(blob_storage: BlobStorage, prefix: str) -> None:
    with pytest.raises(Invalid):
        list(blob_storage.keys(prefix))


# -- atomicity -----------------------------------------------------------------------------
def _break_writes(storage: BlobStorage, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make writes fail after some of their bytes went out; returns the failures injected."""
    failures: list[str] = []

    def reset(*_args: Any, **_kwargs: Any) -> Any:
        failures.append("connection reset")
        raise ProtocolError("Connection aborted.", ConnectionResetError(104, "reset"))

    if isinstance(storage, FileStorage):

        def full_disk(_fd: int) -> None:
            failures.append("disk full")
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(storage_file.os, "fsync", full_disk)
        return failures
    assert isinstance(storage, S3Storage)
    client = storage.client
    real_upload_part = client._upload_part

    def upload_part(*args: Any) -> str:
        if args[-1] >= 2:  # part numbers count from 1: the first part gets through
            return str(reset())
        return real_upload_part(*args)

    monkeypatch.setattr(client, "_upload_part", upload_part)
    monkeypatch.setattr(client, "_put_object", reset)
    return failures


def _assert_no_leftovers(storage: BlobStorage) -> None:
    if isinstance(storage, FileStorage):
        assert list(storage.tmp_dir.iterdir()) == []
        return
    assert isinstance(storage, S3Storage)
    s3 = _boto3_client(storage)
    uploads = s3.list_multipart_uploads(Bucket=storage.bucket).get("Uploads", [])
    assert uploads == [], "an aborted multipart upload must not linger"


def _boto3_client(storage: S3Storage) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=storage.endpoint,
        aws_access_key_id=S3_ACCESS_KEY,
        aws_secret_access_key=S3_SECRET_KEY,
        region_name="us-east-1",
    )


@pytest.mark.parametrize("size", [1000, 11 * 1024 * 1024], ids=["small", "multipart"])
def test_failed_move_in_leaves_no_partial_object(
    blob_storage: BlobStorage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    blob_storage.put_bytes(KEY, b"the first version")
    new_key = "1.2.3/fresh.dcm"
    failures = _break_writes(blob_storage, monkeypatch)
    for key in (KEY, new_key):
        source = _write(tmp_path / f"{uuid.uuid4().hex}.part", _pattern(size, seed=5))
        with pytest.raises(Unavailable):
            blob_storage.move_in(key, source)
    monkeypatch.undo()
    assert len(failures) >= 2
    assert blob_storage.read_bytes(KEY) == b"the first version"
    assert not blob_storage.exists(new_key)
    assert list(blob_storage.keys()) == [KEY]
    _assert_no_leftovers(blob_storage)


def test_failed_put_bytes_leaves_no_partial_object(
    blob_storage: BlobStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    blob_storage.put_bytes(KEY, b"the first version")
    failures = _break_writes(blob_storage, monkeypatch)
    with pytest.raises(Unavailable):
        blob_storage.put_bytes(KEY, _pattern(5000, seed=9))
    with pytest.raises(Unavailable):
        blob_storage.put_bytes("1.2.3/fresh.dcm", _pattern(5000, seed=9))
    monkeypatch.undo()
    assert len(failures) == 2
    assert blob_storage.read_bytes(KEY) == b"the first version"
    assert list(blob_storage.keys()) == [KEY]
    _assert_no_leftovers(blob_storage)


def test_readers_see_a_whole_object_or_none_while_it_is_replaced(
    blob_storage: BlobStorage,
) -> None:
    versions = [_pattern(256 * 1024, seed=seed) for seed in (11, 22)]
    blob_storage.put_bytes(KEY, versions[0])
    done = threading.Event()
    seen: list[bytes] = []

    def writer() -> None:
        for round_ in range(30):
            blob_storage.put_bytes(KEY, versions[round_ % 2])
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    while not done.is_set() or len(seen) < 5:
        seen.append(blob_storage.read_bytes(KEY))
    thread.join()
    assert all(data in versions for data in seen)


# -- adapter specifics ---------------------------------------------------------------------
def test_file_storage_offers_the_local_path(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path / "blobs")
    storage.put_bytes(KEY, b"abc")
    path = storage.local_path(KEY)
    assert path is not None and path.read_bytes() == b"abc"
    assert path.is_relative_to(tmp_path / "blobs")


def test_s3_storage_creates_a_missing_bucket_and_reuses_an_existing_one(
    s3_storage_url: Callable[..., str],
) -> None:
    bucket = f"jip-{uuid.uuid4().hex[:12]}"
    first = S3Storage.from_url(
        s3_storage_url(bucket), access_key=S3_ACCESS_KEY, secret_key=S3_SECRET_KEY
    )
    first.put_bytes(KEY, b"kept")
    again = S3Storage.from_url(
        s3_storage_url(bucket), access_key=S3_ACCESS_KEY, secret_key=S3_SECRET_KEY
    )
    assert again.read_bytes(KEY) == b"kept"
    assert again.local_path(KEY) is None
    names = [b["Name"] for b in _boto3_client(first).list_buckets()["Buckets"]]
    assert bucket in names


def test_s3_storage_keeps_prefixes_apart(s3_storage_url: Callable[..., str]) -> None:
    bucket = f"jip-{uuid.uuid4().hex[:12]}"
    blobs, results = (
        S3Storage.from_url(
            s3_storage_url(bucket, prefix), access_key=S3_ACCESS_KEY, secret_key=S3_SECRET_KEY
        )
        for prefix in ("site/blobs", "site/results")
    )
    blobs.put_bytes("a/x.dcm", b"blob")
    results.put_bytes("a/x.dcm", b"result")
    assert blobs.read_bytes("a/x.dcm") == b"blob"
    assert list(results.keys()) == ["a/x.dcm"]
    objects = _boto3_client(blobs).list_objects_v2(Bucket=bucket)["Contents"]
    assert sorted(o["Key"] for o in objects) == ["site/blobs/a/x.dcm", "site/results/a/x.dcm"]


def test_storage_for_builds_s3_storage_with_the_settings_credentials(
    s3_storage_url: Callable[..., str],
) -> None:
    settings = Settings(s3_access_key=S3_ACCESS_KEY, s3_secret_key=S3_SECRET_KEY)  # type: ignore[arg-type]
    storage = storage_for(s3_storage_url(), settings)
    assert isinstance(storage, S3Storage)
    storage.put_bytes(KEY, b"ok")
    assert storage.read_bytes(KEY) == b"ok"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("s3://bucket?endpoint=h:9000&colour=blue", "unknown option"),
        ("s3://bucket?endpoint=h:9000&secure=maybe", "secure="),
        ("s3:///no-bucket?endpoint=h:9000", "s3://bucket"),
    ],
)
def test_s3_storage_refuses_malformed_urls(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        S3Storage.from_url(url)


def test_unreachable_object_store_is_unavailable_and_says_what_to_check() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(Unavailable) as caught:
        S3Storage.from_url(
            f"s3://jip-nowhere?endpoint=127.0.0.1:{port}&secure=false",
            access_key=S3_ACCESS_KEY,
            secret_key=S3_SECRET_KEY,
        )
    message = str(caught.value)
    assert f"127.0.0.1:{port}" in message
    assert "endpoint" in message and "running" in message


def test_deleted_bucket_is_unavailable_not_not_found(s3_storage_url: Callable[..., str]) -> None:
    bucket = f"jip-{uuid.uuid4().hex[:12]}"
    storage = S3Storage.from_url(
        s3_storage_url(bucket), access_key=S3_ACCESS_KEY, secret_key=S3_SECRET_KEY
    )
    _boto3_client(storage).delete_bucket(Bucket=bucket)
    with pytest.raises(Unavailable, match=f"bucket '{bucket}' does not exist"):
        storage.read_bytes(KEY)


def test_move_in_of_a_missing_source_fails_without_storing(
    blob_storage: BlobStorage, tmp_path: Path
) -> None:
    with pytest.raises(OSError):
        blob_storage.move_in(KEY, tmp_path / "gone.part")
    assert not blob_storage.exists(KEY)


def test_file_storage_never_lists_its_temp_folder(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path / "blobs")
    (storage.tmp_dir / "half-written").write_bytes(b"x")
    storage.put_bytes(KEY, b"y")
    assert list(storage.keys()) == [KEY]
    assert os.path.isdir(storage.tmp_dir)


def _record_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What each fsync of the file storage flushed: 'dir' or the file's bytes."""
    flushed: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        real_fsync(fd)
        path = Path(os.readlink(f"/proc/self/fd/{fd}"))
        flushed.append("dir" if path.is_dir() else path.read_bytes().decode())

    monkeypatch.setattr(storage_file.os, "fsync", fsync)
    return flushed


@pytest.mark.parametrize("existing", [False, True], ids=["new key", "existing key"])
def test_file_storage_returns_only_once_bytes_and_folder_are_fsynced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, existing: bool
) -> None:
    storage = FileStorage(tmp_path / "blobs")
    if existing:
        storage.put_bytes(KEY, b"old")
    flushed = _record_fsyncs(monkeypatch)
    storage.move_in(KEY, _write(tmp_path / "spool.dcm", b"new"))
    assert storage.read_bytes(KEY) == b"new"
    # The bytes first, then the folder holding their name; a replaced object is only
    # ever swapped for bytes that were flushed before the swap.
    assert flushed[-2:] == ["new", "dir"]
    assert not (tmp_path / "spool.dcm").exists()


def test_file_storage_without_hard_links_renames_fsynced_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(_source: Any, _target: Any) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(storage_file.os, "link", no_links)
    storage = FileStorage(tmp_path / "blobs")
    flushed = _record_fsyncs(monkeypatch)
    storage.move_in("1.2/3.4/5.dcm", _write(tmp_path / "spool.dcm", b"bytes"))
    storage.put_bytes(KEY, b"more")
    assert storage.read_bytes("1.2/3.4/5.dcm") == b"bytes"
    assert storage.read_bytes(KEY) == b"more"
    assert "bytes" in flushed and "more" in flushed and flushed[-1] == "dir"
    assert list(storage.tmp_dir.iterdir()) == []


def test_file_storage_replaces_a_fragment_left_under_a_key(tmp_path: Path) -> None:
    """A power cut may leave a new key's name over unflushed bytes; the next store fixes it."""
    storage = FileStorage(tmp_path / "blobs")
    fragment = storage.root / KEY
    fragment.parent.mkdir(parents=True)
    fragment.write_bytes(b"\0" * 10)
    storage.move_in(KEY, _write(tmp_path / "spool.dcm", b"the whole object"))
    assert storage.read_bytes(KEY) == b"the whole object"
