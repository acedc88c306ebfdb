"""The index adapters every conformance test runs on.

SQLite always; OpenSearch when ``JIP_TEST_OPENSEARCH_URL`` names a server (a throwaway
index per test module, deleted afterwards).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.meta.corpus import extracted_docs, make_series_docs

from jip.meta.index import MetaIndex
from jip.meta.index_opensearch import OpenSearchIndex
from jip.meta.index_sqlite import SqliteIndex

OPENSEARCH_URL = os.environ.get("JIP_TEST_OPENSEARCH_URL", "")
ADAPTERS = [
    "sqlite",
    pytest.param(
        "opensearch",
        marks=pytest.mark.skipif(
            not OPENSEARCH_URL,
            reason="no OpenSearch here: set JIP_TEST_OPENSEARCH_URL=http://host:9200 to run",
        ),
    ),
]


def open_index(kind: str, tmp: Path) -> tuple[MetaIndex, Callable[[], None]]:
    """A fresh, empty index of ``kind`` and how to drop it."""
    if kind == "sqlite":
        sqlite = SqliteIndex.from_url(f"sqlite:///{tmp / 'index.db'}")
        return sqlite, sqlite.close
    remote = OpenSearchIndex.from_url(
        OPENSEARCH_URL, index=f"jip-test-{uuid.uuid4().hex[:12]}", refresh=True,
        verify_certs=False, ssl_show_warn=False,
    )
    remote.ensure_index()

    def drop() -> None:
        remote.client.indices.delete(index=remote.index)
        # ensure_index put a template of the same name; a reused node keeps it otherwise
        remote.client.indices.delete_index_template(name=remote.index, ignore=[404])
        remote.close()

    return remote, drop


@pytest.fixture(scope="session")
def corpus() -> list[dict[str, Any]]:
    """Generated documents plus documents extracted from real DICOM headers."""
    return make_series_docs(400, seed=11) + extracted_docs()


@pytest.fixture(scope="module", params=ADAPTERS)
def loaded_index(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
    corpus: list[dict[str, Any]],
) -> Iterator[MetaIndex]:
    """An index holding the corpus, shared by the read-only tests of a module."""
    index, drop = open_index(request.param, tmp_path_factory.mktemp("loaded"))
    index.upsert(corpus)
    yield index
    drop()


@pytest.fixture(params=ADAPTERS)
def empty_index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MetaIndex]:
    index, drop = open_index(request.param, tmp_path)
    yield index
    drop()
