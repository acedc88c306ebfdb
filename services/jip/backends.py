"""The one place where a URL scheme picks an adapter.

``file://`` and ``s3://`` pick blob storage, ``sqlite://`` and ``postgresql://`` the
catalog. No other module knows which deployment shape it runs in.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from sqlalchemy import Engine

from jip.config import Settings
from jip.db import make_engine
from jip.store.storage import BlobStorage


def storage_for(url: str, settings: Settings) -> BlobStorage:
    """Blob storage for ``file:///path`` or ``s3://bucket/prefix?endpoint=host:port``."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        from jip.store.storage_file import FileStorage

        return FileStorage(Path(unquote(parsed.path)))
    if parsed.scheme == "s3":
        from jip.store.storage_s3 import S3Storage

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
