"""Fixtures that run a test on every backend: file and S3 storage, SQLite and PostgreSQL.

S3 is `moto` in server mode (real HTTP, so the ``minio`` client runs unchanged), started
once per session. PostgreSQL is the server named by ``JIP_TEST_POSTGRES_URL`` (start a
throwaway one with ``eval "$(deploy/postgres-test.sh)"``); each test gets a database of
its own, and the PostgreSQL cases are skipped when the variable is unset.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.support.network import free_port
from tests.up_site import LAST, abdomen_ct, run_shared_site_tests_last, up_site

from jip.store.storage.port import BlobStorage

__all__ = ["abdomen_ct", "up_site"]  # session fixtures: one `jip up` for every test using it

# moto accepts any credentials; these are passed so that signing runs as in production.
S3_ACCESS_KEY = "jip-test"
S3_SECRET_KEY = "jip-test-secret"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{LAST}: runs after the other tests on the shared `jip up` site"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    run_shared_site_tests_last(items)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """``host:port`` of a moto S3 server for this session."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_storage_url(s3_endpoint: str) -> Callable[..., str]:
    """``s3_storage_url(bucket=None, prefix="blobs")``: a URL on the moto server; a new
    bucket unless one is named."""

    def url(bucket: str | None = None, prefix: str = "blobs") -> str:
        bucket = bucket or f"jip-{uuid.uuid4().hex[:12]}"
        return f"s3://{bucket}/{prefix}?endpoint={s3_endpoint}&secure=false&region=us-east-1"

    return url


@pytest.fixture(params=["file", "s3"])
def blob_storage(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStorage:
    """Empty blob storage: a temp directory, or a fresh bucket on the moto server."""
    if request.param == "file":
        from jip.store.storage.file import FileStorage

        return FileStorage(tmp_path / "blobs")
    from jip.store.storage.s3 import S3Storage

    url = request.getfixturevalue("s3_storage_url")()
    return S3Storage.from_url(
        url,
        access_key=S3_ACCESS_KEY,
        secret_key=S3_SECRET_KEY,
    )


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """URL of a new, empty PostgreSQL database, dropped after the test."""
    server_url = os.environ.get("JIP_TEST_POSTGRES_URL")
    if not server_url:
        pytest.skip(
            "PostgreSQL case skipped: JIP_TEST_POSTGRES_URL is not set "
            '(start a test server with: eval "$(deploy/postgres-test.sh)")'
        )
    import psycopg
    from sqlalchemy.engine import make_url

    name = f"jip_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        drop_database(server_url, name)


def drop_database(server_url: str, name: str, attempts: int = 100) -> None:
    """DROP DATABASE ... WITH (FORCE), again while the server's own autovacuum worker is
    in it: the test role may not end that backend (InsufficientPrivilege), and the
    worker leaves by itself within moments."""
    import psycopg

    for attempt in range(attempts):
        try:
            with psycopg.connect(server_url, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            return
        except psycopg.errors.InsufficientPrivilege:
            if attempt == attempts - 1:
                raise
            time.sleep(0.2)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """URL of an empty catalog database (not yet migrated) on SQLite or PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url
