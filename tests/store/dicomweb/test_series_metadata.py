"""The series metadata cache: catalog header column, memory and disk, invalidation."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydicom
import pytest
from tests.store.dicomweb.support import (
    Site,
    ct_series,
    part10,
    sample_file_bytes,
    serve,
    uids_of,
)

from jip.store.dicomweb.series_metadata import SeriesMetadata, absolute_bulk_uris, read_header


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A site of its own for this module, served by uvicorn over real HTTP."""
    yield from serve(tmp_path_factory.mktemp("dicomweb") / "data")


def _metadata(site: Site, data: bytes) -> httpx.Response:
    study, series, _ = uids_of(data)
    return httpx.get(f"{site.url}/studies/{study}/series/{series}/metadata", timeout=30)


def _cache_files(site: Site, series: str) -> list[Path]:
    return sorted((site.data_dir / "cache" / "series-metadata").glob(f"{series}_*.json"))


def test_first_request_fills_the_catalog_header_column(site: Site) -> None:
    files = ct_series(slices=3)
    for data in files:
        site.runtime.ingestor.ingest_bytes(data)
    sops = [uids_of(f)[2] for f in files]
    assert set(site.runtime.catalog.header_json_of(sops).values()) == {None}
    assert _metadata(site, files[0]).status_code == 200
    cached = site.runtime.catalog.header_json_of(sops)
    assert all(text is not None for text in cached.values())
    header = json.loads(cached[sops[0]])
    assert header["7FE00010"]["BulkDataURI"] == "bulk:7FE00010"  # placeholders, no host


def test_series_json_is_served_from_cache_then_recomputed_when_the_series_grows(
    site: Site,
) -> None:
    files = ct_series(slices=3)
    for data in files[:2]:
        site.runtime.ingestor.ingest_bytes(data)
    first = _metadata(site, files[0]).json()
    series = uids_of(files[0])[1]
    (on_disk,) = _cache_files(site, series)
    assert len(first) == 2
    # Served from the cache: the files themselves are not read again.
    for instance in site.runtime.catalog.instances_of_series(series):
        path = site.runtime.storage.local_path(instance.blob_key)
        assert path is not None
        path.rename(path.with_suffix(".moved"))
    assert _metadata(site, files[0]).json() == first
    for instance in site.runtime.catalog.instances_of_series(series):
        path = site.runtime.storage.local_path(instance.blob_key)
        assert path is not None
        path.with_suffix(".moved").rename(path)
    site.runtime.ingestor.ingest_bytes(files[2])
    grown = _metadata(site, files[0]).json()
    assert len(grown) == 3
    (replaced,) = _cache_files(site, series)
    assert replaced != on_disk


def test_a_new_process_reads_the_disk_cache(site: Site) -> None:
    files = ct_series(slices=2)
    for data in files:
        site.runtime.ingestor.ingest_bytes(data)
    payload = _metadata(site, files[0]).content
    series = uids_of(files[0])[1]
    fresh = SeriesMetadata(
        site.runtime.catalog, site.runtime.storage, site.data_dir / "cache" / "series-metadata"
    )
    instances = site.runtime.catalog.instances_of_series(series)
    assert absolute_bulk_uris(fresh.series_json(series, instances), site.url) == payload


def test_delete_drops_the_cached_series(site: Site) -> None:
    files = ct_series(slices=2)
    for data in files:
        site.runtime.ingestor.ingest_bytes(data)
    study, series, _ = uids_of(files[0])
    assert _metadata(site, files[0]).status_code == 200
    assert _cache_files(site, series)
    assert httpx.delete(f"{site.url}/studies/{study}/series/{series}").status_code == 204
    assert not _cache_files(site, series)
    assert _metadata(site, files[0]).status_code == 404


def test_nested_bulk_data_gets_a_path_through_its_sequence(site: Site) -> None:
    ds = pydicom.dcmread(io.BytesIO(ct_series(slices=1)[0]))
    item = pydicom.Dataset()
    item.RedPaletteColorLookupTableData = bytes(range(256)) * 8
    ds.IconImageSequence = [item]
    data = part10(ds)
    site.runtime.ingestor.ingest_bytes(data)
    (metadata,) = _metadata(site, data).json()
    uri = metadata["00880200"]["Value"][0]["00281201"]["BulkDataURI"]
    assert uri.endswith("/bulkdata/00880200/1/00281201")
    response = httpx.get(uri)
    assert response.status_code == 200
    assert bytes(range(256)) * 8 in response.content


@pytest.mark.parametrize("kind", ["explicit", "jpeg2000", "rle"])
def test_header_reading_never_touches_pixel_data(kind: str) -> None:
    data = sample_file_bytes(kind)
    header = read_header(io.BytesIO(data))
    assert header["7FE00010"]["BulkDataURI"] == "bulk:7FE00010"
    assert header["7FE00010"]["vr"] in ("OB", "OW")
    assert "00080018" in header
