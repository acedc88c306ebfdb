"""The one place where a URL scheme picks an adapter.

``file://`` and ``s3://`` pick blob storage, ``sqlite://`` and ``postgresql://`` the
catalog, ``sqlite://`` and ``http(s)://`` the metadata index. No other module knows which
deployment shape it runs in.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from sqlalchemy import Engine

from jip.config import Settings
from jip.db import make_engine
from jip.store.storage.port import BlobStorage

if TYPE_CHECKING:
    from jip.meta.index import MetaIndex


def storage_for(url: str, settings: Settings) -> BlobStorage:
    """Blob storage for ``file:///path`` or ``s3://bucket/prefix?endpoint=host:port``."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        from jip.store.storage.file import FileStorage

        return FileStorage(Path(unquote(parsed.path)))
    if parsed.scheme == "s3":
        from jip.store.storage.s3 import S3Storage

        return S3Storage.from_url(
            url,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key.get_secret_value()
            if settings.s3_secret_key
            else None,
        )
    raise ValueError(f"unsupported storage URL {url!r}: use file:///path or s3://bucket/prefix")


def catalog_engine_for(url: str) -> Engine:
    """Catalog engine for ``sqlite:///path`` or ``postgresql://user@host/db``."""
    if url.startswith(("sqlite:", "postgresql:", "postgresql+psycopg:")):
        return make_engine(url)
    raise ValueError(f"unsupported catalog URL {url!r}: use sqlite:///path or postgresql://…")


def index_for(url: str) -> MetaIndex:
    """Metadata index for ``sqlite:///path`` or ``https://user:password@opensearch:9200``."""
    scheme = urlparse(url).scheme
    if scheme == "sqlite":
        from jip.meta.index_sqlite import SqliteIndex

        return SqliteIndex.from_url(url)
    if scheme in ("http", "https"):
        from jip.meta.index_opensearch import OpenSearchIndex

        index = OpenSearchIndex.from_url(url)
        index.ensure_index()
        return index
    raise ValueError(f"unsupported index URL {url!r}: use sqlite:///path or https://opensearch…")
