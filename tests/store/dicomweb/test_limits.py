"""Bounded work per request (issue #12): rendered viewport, frame lists, STOW-RS parts."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.store.dicomweb.support import Site, ct_series, sample_file_bytes, serve, uids_of
from tests.store.dicomweb.test_stow import stow

from jip.config import StoreSettings
from jip.errors import TooLarge
from jip.store.dicomweb.multipart import Part, new_boundary, read_parts, write_parts


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    store = StoreSettings(dicomweb={"max_stow_parts": 5, "max_frames_per_request": 4})
    yield from serve(tmp_path_factory.mktemp("dicomweb") / "data", store=store)


@pytest.fixture(scope="module")
def files(site: Site) -> dict[str, bytes]:
    stored = {
        "small": ct_series(slices=1, rows=16, columns=16)[0],
        "multiframe": sample_file_bytes("multiframe_j2k"),
    }
    for data in stored.values():
        site.runtime.ingestor.ingest_bytes(data)
    return stored


def _url(site: Site, data: bytes, suffix: str = "") -> str:
    study, series, sop = uids_of(data)
    return f"{site.url}/studies/{study}/series/{series}/instances/{sop}{suffix}"


def _part_count(response: httpx.Response) -> int:
    boundary = response.headers["content-type"].split("boundary=")[1].strip('"')
    return response.content.count(f"--{boundary}\r\n".encode())


def test_a_viewport_beyond_the_pixel_limit_is_400_naming_it(
    site: Site, files: dict[str, bytes]
) -> None:
    url = _url(site, files["small"], "/rendered")
    refused = httpx.get(url, params={"viewport": "4097,4097"}, headers={"Accept": "image/png"})
    assert refused.status_code == 400
    assert "store.dicomweb.max_rendered_pixels" in refused.json()["detail"]
    for viewport in ("1e9,1e9", "inf,5", "99999999999999999999,1"):
        assert httpx.get(url, params={"viewport": viewport}).status_code == 400, viewport
    small = httpx.get(url, params={"viewport": "64,64"}, headers={"Accept": "image/png"})
    assert small.status_code == 200


def test_repeated_frames_are_sent_once(site: Site, files: dict[str, bytes]) -> None:
    url = _url(site, files["multiframe"], "/frames/" + ",".join(["1"] * 10 + ["2"] * 5))
    response = httpx.get(
        url, headers={"Accept": "multipart/related; type=application/octet-stream"}
    )
    assert response.status_code == 200
    assert _part_count(response) == 2
    rendered = httpx.get(_url(site, files["multiframe"], "/frames/3,3,3/rendered"))
    assert rendered.status_code == 200 and rendered.headers["content-type"] == "image/jpeg"


@pytest.mark.parametrize("suffix", ["/frames/1,2,3,4,5", "/frames/1,2,3,4,5/rendered"])
def test_a_frame_list_beyond_the_limit_is_400_naming_it(
    site: Site, files: dict[str, bytes], suffix: str
) -> None:
    response = httpx.get(_url(site, files["multiframe"], suffix))
    assert response.status_code == 400
    assert "store.dicomweb.max_frames_per_request" in response.json()["detail"]
    long_list = "/frames/" + ",".join(["1"] * 10_000)
    assert httpx.get(_url(site, files["multiframe"], long_list)).status_code == 400


def test_more_stow_parts_than_the_limit_is_413_and_stores_nothing(site: Site) -> None:
    files = ct_series(slices=6, rows=8, columns=8)
    before = site.runtime.catalog.counts()["instances"]
    response = stow(f"{site.url}/studies", files)
    assert response.status_code == 413
    assert "store.dicomweb.max_stow_parts" in response.json()["detail"]
    assert site.runtime.catalog.counts()["instances"] == before
    assert stow(f"{site.url}/studies", files[:5]).status_code == 200


def test_empty_stow_parts_fail_alone_without_being_parsed(site: Site) -> None:
    good = ct_series(slices=1, rows=8, columns=8)[0]
    response = stow(f"{site.url}/studies", [b"", good, b"", b""])
    assert response.status_code == 202
    body = response.json()
    comments = [item["00000902"]["Value"][0] for item in body["00081198"]["Value"]]
    assert comments == ["part 1: part is empty", "part 3: part is empty", "part 4: part is empty"]
    assert len(body["00081199"]["Value"]) == 1


def test_the_part_limit_holds_before_any_part_is_spooled(tmp_path: Path) -> None:
    boundary = new_boundary()
    message = b"".join(write_parts([Part("application/dicom", [b""])] * 50, boundary))

    async def chunks() -> object:
        yield message

    with pytest.raises(TooLarge, match="more than 10 parts"):
        asyncio.run(read_parts(chunks(), boundary, tmp_path, 10**6, 10))  # type: ignore[arg-type]
    assert len(list(tmp_path.iterdir())) == 10
