"""JSON and form bodies are capped (http.max_json_body_bytes); STOW-RS streams past it."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tests.store.dicomweb.support import part10

from jip.app import build_app
from jip.config import Settings
from jip.runtime import build_runtime
from jip.samples import image_series, random_patient

LIMIT = 64 * 1024


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(
        data_dir=tmp_path / "data",
        auth={"enabled": False},
        http={"max_json_body_bytes": LIMIT},
    )
    runtime = build_runtime(settings)
    yield TestClient(build_app(runtime))
    runtime.close()


def big_query() -> bytes:
    body = {"query": {"terms": {"Modality": ["CT"] * (LIMIT // 4)}}}
    return json.dumps(body).encode()


def test_a_json_body_over_the_limit_is_413_naming_it(client: TestClient) -> None:
    body = big_query()
    assert len(body) > LIMIT
    response = client.post(
        "/api/meta/search", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert "http.max_json_body_bytes" in response.json()["detail"]
    assert str(LIMIT) in response.json()["detail"]


def test_a_chunked_body_without_length_is_counted(client: TestClient) -> None:
    chunk = b" " * 4096

    def chunks() -> Iterator[bytes]:
        for _ in range(LIMIT // len(chunk) + 2):
            yield chunk

    response = client.post(
        "/api/projects", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413


def test_a_body_without_content_type_is_capped_too(client: TestClient) -> None:
    response = client.post("/api/projects", content=b"{" + b" " * LIMIT + b"}")
    assert response.status_code == 413


def test_a_small_json_body_passes(client: TestClient) -> None:
    response = client.post("/api/projects", json={"name": "lung", "description": "x" * 1000})
    assert response.status_code == 201, response.text


def test_stow_streams_past_the_json_limit(client: TestClient) -> None:
    """A STOW-RS body larger than the JSON cap is stored (it has its own limits)."""
    datasets = image_series(
        patient=random_patient(random.Random(1), 1), slices=3, rows=128, columns=128
    )
    boundary = "jip-test-boundary"
    body = (
        b"".join(
            b"--"
            + boundary.encode()
            + b"\r\nContent-Type: application/dicom\r\n\r\n"
            + part10(ds)
            + b"\r\n"
            for ds in datasets
        )
        + b"--"
        + boundary.encode()
        + b"--\r\n"
    )
    assert len(body) > LIMIT
    response = client.post(
        "/dicom-web/studies",
        content=body,
        headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'
        },
    )
    assert response.status_code == 200, response.text
