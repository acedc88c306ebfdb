"""S3 blob storage (cluster shape): one object per key in a bucket, through ``minio``.

URL form: ``s3://bucket[/prefix]?endpoint=host:port&secure=false&region=us-east-1``.
A single S3 PUT (and a completed multipart upload) is atomic: a reader sees the whole
object or none, never a fragment, and an aborted multipart upload leaves nothing
visible. The object is durable once the store answers the PUT.
"""

from __future__ import annotations

import contextlib
import io
import ssl
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, cast
from urllib.parse import parse_qs, unquote, urlparse

import urllib3
from minio import Minio
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError
from minio.helpers import DictType
from urllib3.exceptions import HTTPError as Urllib3Error

from jip.errors import JipError, NotFound, Unavailable
from jip.store.storage.port import StagedBlob, check_key

_URL_OPTIONS = {"endpoint", "secure", "region"}
_NOT_FOUND = {"NoSuchKey", "NoSuchObject"}
_BAD_CREDENTIALS = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
}
# A forward seek by at most this much reads on instead of starting a new ranged GET.
_SKIP_LIMIT = 256 * 1024


def _http_client() -> urllib3.PoolManager:
    """Fail fast on an unreachable endpoint (minio's default waits 5 minutes to connect).

    The system trust store is used, so a site's own CA for an internal MinIO works.
    """
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=10, read=120),
        maxsize=32,  # one per concurrent association or request
        ssl_context=ssl.create_default_context(),
        retries=urllib3.Retry(total=3, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
    )


class S3Storage:
    """Blob storage in an S3 bucket (MinIO or any S3-compatible store)."""

    def __init__(self, client: Minio, bucket: str, prefix: str = "", *, endpoint: str = "") -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = check_key(prefix.strip("/")) + "/" if prefix.strip("/") else ""
        # ``scheme://host:port``, for messages: where an operator looks when the store fails.
        self.endpoint = endpoint
        self.location = f"{endpoint}/{bucket}" if endpoint else bucket

    @classmethod
    def from_url(
        cls, url: str, *, access_key: str | None = None, secret_key: str | None = None
    ) -> S3Storage:
        """Storage for ``s3://bucket[/prefix]?endpoint=…``; creates the bucket if missing."""
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"not an S3 storage URL {url!r}: use s3://bucket[/prefix]?endpoint=…")
        options = {name: values[-1] for name, values in parse_qs(parsed.query).items()}
        unknown = sorted(set(options) - _URL_OPTIONS)
        if unknown:
            raise ValueError(
                f"unknown option(s) {', '.join(unknown)} in storage URL; "
                f"use {', '.join(sorted(_URL_OPTIONS))}"
            )
        secure = options.get("secure", "true").lower()
        if secure not in {"true", "false", "1", "0", "yes", "no"}:
            raise ValueError(f"secure={secure!r} in storage URL: use true or false")
        endpoint = options.get("endpoint", "s3.amazonaws.com")
        is_secure = secure in {"true", "1", "yes"}
        client = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=is_secure,
            region=options.get("region"),
            http_client=_http_client(),
        )
        scheme = "https" if is_secure else "http"
        storage = cls(
            client, parsed.netloc, unquote(parsed.path), endpoint=f"{scheme}://{endpoint}"
        )
        storage.ensure_bucket(options.get("region"))
        return storage

    def ensure_bucket(self, region: str | None = None) -> None:
        """Create the bucket unless it exists (several processes may race to do so)."""
        with self._errors(f"bucket {self.bucket!r}"):
            if self.client.bucket_exists(self.bucket):
                return
            try:
                self.client.make_bucket(self.bucket, location=region)
            except S3Error as exc:
                if exc.code != "BucketAlreadyOwnedByYou":
                    raise

    def _name(self, key: str) -> str:
        return self.prefix + check_key(key)

    # -- writes -------------------------------------------------------------------------
    def move_in(self, key: str, source: Path) -> None:
        name = self._name(key)
        with self._errors(f"object {key!r}"):
            # Large files go up as a multipart upload, which minio aborts on failure:
            # nothing becomes visible until the upload completes.
            self.client.fput_object(self.bucket, name, str(source))
        source.unlink(missing_ok=True)

    def stage(self, key: str, source: Path) -> StagedBlob:
        """An upload is durable once it completes: nothing is left for :meth:`flush`."""
        self.move_in(key, source)
        return StagedBlob(key, source)

    def stage_bytes(self, key: str, data: bytes) -> StagedBlob:
        """Uploaded now, as :meth:`stage`."""
        self.put_bytes(key, data)
        return StagedBlob(key, None)

    def flush_bytes(self, staged: StagedBlob) -> StagedBlob:
        """Nothing to do: the upload completed (see :meth:`stage`)."""
        return staged

    def flush(self, staged: Sequence[StagedBlob]) -> None:
        """Nothing to do: every staged object was uploaded whole."""

    def put_bytes(self, key: str, data: bytes) -> None:
        name = self._name(key)
        with self._errors(f"object {key!r}"):
            self.client.put_object(self.bucket, name, io.BytesIO(data), len(data))

    # -- reads --------------------------------------------------------------------------
    def read_bytes(self, key: str) -> bytes:
        name = self._name(key)
        with self._errors(f"object {key!r}"):
            response = self.client.get_object(self.bucket, name)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

    def open(self, key: str) -> BinaryIO:
        name = self._name(key)
        with self._errors(f"object {key!r}"):
            stat = self.client.stat_object(self.bucket, name)
        reader = _ObjectReader(self, key, name, stat.size or 0, stat.etag)
        # Not an io.BufferedReader: pydicom takes those for local files and re-opens
        # them by name to read deferred values.
        return cast(BinaryIO, reader)

    def local_path(self, key: str) -> Path | None:
        return None

    def size(self, key: str) -> int:
        name = self._name(key)
        with self._errors(f"object {key!r}"):
            return self.client.stat_object(self.bucket, name).size or 0

    def exists(self, key: str) -> bool:
        name = self._name(key)
        try:
            with self._errors(f"object {key!r}"):
                self.client.stat_object(self.bucket, name)
        except NotFound:
            return False
        return True

    def delete(self, key: str) -> None:
        name = self._name(key)
        with self._errors(f"object {key!r}"):
            self.client.remove_object(self.bucket, name)  # a missing key is no error in S3

    def keys(self, prefix: str = "") -> Iterator[str]:
        # A prefix names a folder, as in the file adapter: "1.2" does not match "1.23/…".
        folder = self.prefix + (check_key(prefix.rstrip("/")) + "/" if prefix.rstrip("/") else "")
        with self._errors(f"listing {prefix!r}"):
            for obj in self.client.list_objects(self.bucket, prefix=folder, recursive=True):
                if obj.object_name is not None:
                    yield obj.object_name[len(self.prefix) :]

    # -- errors -------------------------------------------------------------------------
    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Translate minio and urllib3 errors into :mod:`jip.errors`."""
        try:
            yield
        except JipError:
            raise
        except S3Error as exc:
            raise self._s3_error(exc, what) from exc
        except (ServerError, InvalidResponseError) as exc:
            raise Unavailable(
                f"object store at {self.location} failed on {what}: {exc}; "
                "check that the endpoint is an S3 service and that it is healthy"
            ) from exc
        except (Urllib3Error, MinioException) as exc:
            raise Unavailable(
                f"cannot reach the object store at {self.location} for {what}: {exc}; "
                "check the endpoint host:port, the secure= flag (http vs https) "
                "and that the object store is running"
            ) from exc

    def _s3_error(self, exc: S3Error, what: str) -> JipError:
        if exc.code in _NOT_FOUND:
            return NotFound(f"no stored {what}")
        if exc.code == "NoSuchBucket":
            return Unavailable(
                f"bucket {self.bucket!r} does not exist at {self.location}; "
                "restart to create it or check the storage URL"
            )
        if exc.code in _BAD_CREDENTIALS:
            return Unavailable(
                f"object store at {self.location} refused access ({exc.code}); "
                "check s3_access_key, s3_secret_key and the bucket policy"
            )
        return Unavailable(
            f"object store at {self.location} failed on {what}: {exc.code} {exc.message}"
        )


class _ObjectReader(io.RawIOBase):
    """A seekable stream over an object; a seek starts a ranged GET (pydicom seeks).

    Later requests carry ``If-Match`` with the first ETag, so a reader never mixes the
    bytes of two versions of an object.
    """

    def __init__(self, storage: S3Storage, key: str, name: str, size: int, etag: str | None):
        super().__init__()
        self._storage = storage
        self._what = f"object {key!r}"
        self._name = name
        self._size = size
        self._etag = etag
        self._pos = 0
        self._response: Any = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        position = base + offset
        if position < 0:
            raise ValueError(f"negative seek position {position}")
        gap = position - self._pos
        if self._response is not None and 0 < gap <= _SKIP_LIMIT and position < self._size:
            with self._storage._errors(self._what):
                while self._pos < position:
                    skipped = len(self._response.read(position - self._pos))
                    if skipped == 0:
                        break
                    self._pos += skipped
        if position != self._pos:
            self._drop()
            self._pos = position
        return position

    def readinto(self, buffer: Any) -> int:
        if self._pos >= self._size or len(buffer) == 0:
            return 0
        with self._storage._errors(self._what):
            if self._response is None:
                headers: DictType | None = {"If-Match": self._etag} if self._etag else None
                self._response = self._storage.client.get_object(
                    self._storage.bucket, self._name, offset=self._pos, request_headers=headers
                )
            count = int(self._response.readinto(buffer))
        if count == 0:
            raise Unavailable(
                f"{self._what} ended at byte {self._pos} of {self._size}; retry the read"
            )
        self._pos += count
        return count

    def _drop(self) -> None:
        if self._response is not None:
            self._response.close()
            self._response.release_conn()
            self._response = None

    def close(self) -> None:
        self._drop()
        super().close()
