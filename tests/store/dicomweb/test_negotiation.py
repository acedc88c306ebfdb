"""Accept negotiation (PS3.18 §8.7), reverse-proxy URLs and capabilities, over httpx."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator

import httpx
import numpy as np
import pydicom
import pytest
from PIL import Image
from tests.store.dicomweb.support import (
    Site,
    ct_series,
    sample_file_bytes,
    serve,
    uids_of,
)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A site of its own for this module, served by uvicorn over real HTTP."""
    yield from serve(tmp_path_factory.mktemp("dicomweb") / "data")


@pytest.fixture(scope="module")
def files(site: Site) -> Iterator[dict[str, bytes]]:
    stored = {
        "explicit": sample_file_bytes("explicit"),
        "jpeg_baseline": sample_file_bytes("jpeg_baseline"),
        "jpeg2000": sample_file_bytes("jpeg2000"),
        "multiframe_j2k": sample_file_bytes("multiframe_j2k"),
        "ct": ct_series(slices=1, rows=64, columns=64)[0],
    }
    for data in stored.values():
        site.runtime.ingestor.ingest_bytes(data)
    yield stored


def _url(site: Site, data: bytes, suffix: str = "") -> str:
    study, series, sop = uids_of(data)
    return f"{site.url}/studies/{study}/series/{series}/instances/{sop}{suffix}"


def _parts(response: httpx.Response) -> list[tuple[str, bytes]]:
    """(Content-Type, body) of each part of a multipart/related response."""
    boundary = re.search(r"boundary=([^;]+)", response.headers["content-type"])
    assert boundary is not None
    delimiter = b"--" + boundary.group(1).strip('"').encode()
    result = []
    for chunk in response.content.split(delimiter)[1:-1]:
        head, _, body = chunk[2:].partition(b"\r\n\r\n")
        content_type = re.search(rb"Content-Type: ([^\r\n]+)", head)
        assert content_type is not None
        result.append((content_type.group(1).decode(), body[:-2]))
    return result


def _get(url: str, header: str | None = None, **params: str) -> httpx.Response:
    headers = {"Accept": header} if header is not None else {}
    return httpx.get(url, headers=headers, params=params, timeout=60)


# -- frames -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "accept",
    [
        None,
        "*/*",
        'multipart/related; type="*/*"',
        "multipart/related; type=application/octet-stream; transfer-syntax=*",
        'multipart/related; type="image/jpeg"',
        'multipart/related; type="image/*"',
    ],
)
def test_jpeg_frames_go_out_as_stored_for_any_compatible_accept(
    site: Site,
    files: dict[str, bytes],
    accept: str | None,
) -> None:
    response = _get(_url(site, files["jpeg_baseline"], "/frames/1"), accept)
    assert response.status_code == 200
    ((content_type, body),) = _parts(response)
    assert content_type.endswith("transfer-syntax=1.2.840.10008.1.2.4.50")
    assert body[:2] == b"\xff\xd8"  # a JPEG bitstream


@pytest.mark.parametrize("accept", ["image/jpeg", "image/*", "image/jpeg, image/png"])
def test_one_frame_asked_as_a_plain_media_type_comes_as_a_single_part(
    site: Site,
    files: dict[str, bytes],
    accept: str,
) -> None:
    response = _get(_url(site, files["jpeg_baseline"], "/frames/1"), accept)
    assert response.headers["content-type"] == "image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50"
    assert response.content[:2] == b"\xff\xd8"


def test_octet_stream_only_gets_decoded_pixels(site: Site, files: dict[str, bytes]) -> None:
    response = _get(
        _url(site, files["jpeg_baseline"], "/frames/1"),
        'multipart/related; type="application/octet-stream"',
    )
    ((content_type, body),) = _parts(response)
    assert content_type == "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"
    ds = pydicom.dcmread(io.BytesIO(files["jpeg_baseline"]))
    assert len(body) == ds.Rows * ds.Columns * 3


def test_uncompressed_frames_for_star(site: Site, files: dict[str, bytes]) -> None:
    response = _get(_url(site, files["ct"], "/frames/1"), "*/*")
    ((content_type, body),) = _parts(response)
    assert content_type.startswith("application/octet-stream")
    pixels = pydicom.dcmread(io.BytesIO(files["ct"])).pixel_array
    assert np.array_equal(np.frombuffer(body, "<u2").reshape(pixels.shape), pixels)


def test_unproducible_frame_syntax_is_406(site: Site, files: dict[str, bytes]) -> None:
    response = _get(_url(site, files["ct"], "/frames/1"), 'multipart/related; type="image/jp2"')
    assert response.status_code == 406
    assert "image/jp2" in response.json()["detail"]


def test_second_choice_is_used_when_the_first_cannot_be_made(
    site: Site,
    files: dict[str, bytes],
) -> None:
    accept = 'multipart/related; type="image/jls", multipart/related; type="image/jp2";q=0.5'
    response = _get(_url(site, files["jpeg2000"], "/frames/1"), accept)
    assert response.status_code == 200
    assert _parts(response)[0][0].startswith("image/jp2")


def test_frame_numbers_are_checked(site: Site, files: dict[str, bytes]) -> None:
    assert _get(_url(site, files["multiframe_j2k"], "/frames/11")).status_code == 404
    assert _get(_url(site, files["multiframe_j2k"], "/frames/0")).status_code == 400
    assert _get(_url(site, files["multiframe_j2k"], "/frames/a")).status_code == 400
    assert len(_parts(_get(_url(site, files["multiframe_j2k"], "/frames/10,2,5")))) == 3


# -- instances ---------------------------------------------------------------------------
def test_instance_in_its_stored_syntax_for_star_transfer_syntax(
    site: Site,
    files: dict[str, bytes],
) -> None:
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    ((content_type, body),) = _parts(_get(_url(site, files["jpeg2000"]), accept))
    assert content_type == "application/dicom; transfer-syntax=1.2.840.10008.1.2.4.91"
    assert body == files["jpeg2000"]


def test_instance_transcoded_to_explicit_little_endian_on_request(
    site: Site,
    files: dict[str, bytes],
) -> None:
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1'
    ((content_type, body),) = _parts(_get(_url(site, files["jpeg2000"]), accept))
    assert content_type.endswith("1.2.840.10008.1.2.1")
    ds = pydicom.dcmread(io.BytesIO(body))
    original = pydicom.dcmread(io.BytesIO(files["jpeg2000"]))
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert ds.SOPInstanceUID == original.SOPInstanceUID
    assert np.array_equal(ds.pixel_array, original.pixel_array)


def test_instance_in_an_unproducible_syntax_is_406(site: Site, files: dict[str, bytes]) -> None:
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.80'
    assert _get(_url(site, files["jpeg2000"]), accept).status_code == 406
    assert _get(_url(site, files["jpeg2000"]), "application/dicom+json").status_code == 406


def test_accept_query_parameter_overrides_the_header(site: Site, files: dict[str, bytes]) -> None:
    response = _get(_url(site, files["ct"], "/rendered"), "image/jpeg", accept="image/png")
    assert response.headers["content-type"] == "image/png"


# -- rendered, metadata, search representations --------------------------------------------
def test_rendered_window_quality_and_errors(site: Site, files: dict[str, bytes]) -> None:
    url = _url(site, files["ct"], "/rendered")
    narrow = _get(url, "image/png", window="40,80,linear")
    wide = _get(url, "image/png", window="40,4000")
    assert Image.open(io.BytesIO(narrow.content)).getextrema() == (0, 255)
    low, high = Image.open(io.BytesIO(wide.content)).getextrema()
    assert high - low < 200
    assert _get(url, "image/jpeg", quality="0").status_code == 400
    assert _get(url, "image/jpeg", viewport="x").status_code == 400
    assert _get(url, "image/jpeg", window="40").status_code == 400
    assert _get(url, "application/pdf").status_code == 406


def test_thumbnails_fit_128_pixels(site: Site, files: dict[str, bytes]) -> None:
    study, series, _ = uids_of(files["jpeg2000"])
    for url in (
        f"{site.url}/studies/{study}/thumbnail",
        f"{site.url}/studies/{study}/series/{series}/thumbnail",
        _url(site, files["jpeg2000"], "/thumbnail"),
        _url(site, files["jpeg2000"], "/frames/1/thumbnail"),
    ):
        image = Image.open(io.BytesIO(_get(url).content))
        assert image.size == (32, 128)  # 256x1024 scaled to fit 128x128


def test_rendered_series_is_one_part_per_image(site: Site, files: dict[str, bytes]) -> None:
    study, series, _ = uids_of(files["ct"])
    parts = _parts(_get(f"{site.url}/studies/{study}/series/{series}/rendered", "image/png"))
    assert [content_type for content_type, _ in parts] == ["image/png"]


def test_metadata_as_native_dicom_model_xml(site: Site, files: dict[str, bytes]) -> None:
    response = _get(
        _url(site, files["ct"], "/metadata"), 'multipart/related; type="application/dicom+xml"'
    )
    ((content_type, body),) = _parts(response)
    assert content_type == "application/dicom+xml"
    assert b"<NativeDicomModel" in body and b'keyword="PatientName"' in body
    assert b"<FamilyName>" in body and b"<BulkData uri=" in body


def test_search_as_xml(site: Site) -> None:
    response = _get(f"{site.url}/studies", 'multipart/related; type="application/dicom+xml"')
    parts = _parts(response)
    assert parts and all(b'keyword="StudyInstanceUID"' in body for _, body in parts)


# -- URLs behind a reverse proxy ----------------------------------------------------------
@pytest.mark.parametrize(
    ("headers", "base"),
    [
        (
            {
                "X-Forwarded-Proto": "https",
                "X-Forwarded-Host": "pacs.example.org",
                "X-Forwarded-Prefix": "/jip",
            },
            "https://pacs.example.org/jip/dicom-web",
        ),
        (
            {"Forwarded": 'for=10.0.0.1;proto=https;host="viewer.example.org:8443"'},
            "https://viewer.example.org:8443/dicom-web",
        ),
        ({"X-Forwarded-Host": "evil.example/<script>"}, None),
    ],
)
def test_returned_urls_follow_proxy_headers(
    site: Site,
    files: dict[str, bytes],
    headers: dict[str, str],
    base: str | None,
) -> None:
    study, series, _ = uids_of(files["ct"])
    metadata = httpx.get(f"{site.url}/studies/{study}/series/{series}/metadata", headers=headers)
    uri = metadata.json()[0]["7FE00010"]["BulkDataURI"]
    search = httpx.get(f"{site.url}/studies/{study}/series", headers=headers).json()
    retrieve_url = search[0]["00081190"]["Value"][0]
    expected = base or site.url  # a forged host is ignored
    assert uri.startswith(f"{expected}/studies/{study}/series/{series}/instances/")
    assert retrieve_url == f"{expected}/studies/{study}/series/{series}"


def test_bulk_data_uri_is_retrievable(site: Site, files: dict[str, bytes]) -> None:
    study, series, _ = uids_of(files["ct"])
    metadata = httpx.get(f"{site.url}/studies/{study}/series/{series}/metadata").json()
    response = _get(metadata[0]["7FE00010"]["BulkDataURI"])
    ((content_type, body),) = _parts(response)
    assert content_type.startswith("application/octet-stream")
    assert body == pydicom.dcmread(io.BytesIO(files["ct"])).PixelData


# -- capabilities -------------------------------------------------------------------------
def test_capabilities_as_wadl_and_json(site: Site) -> None:
    wadl = httpx.options(site.url)
    assert wadl.status_code == 200
    assert wadl.headers["content-type"].startswith("application/vnd.sun.wadl+xml")
    assert b'id="RetrieveFrames"' in wadl.content
    described = httpx.get(site.url, headers={"Accept": "application/json"}).json()
    paths = {resource["path"] for resource in described["resources"]}
    assert "studies/{study}/series/{series}/metadata" in paths


# -- default transfer syntax (PS3.18 §8.7.3.5.2) --------------------------------------------
def _pydicom_file(name: str) -> bytes:
    """A pydicom test file under a SOP Instance UID of its own (several share one)."""
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    path = get_testdata_file(name)
    assert path is not None
    ds = pydicom.dcmread(path)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    out = io.BytesIO()
    ds.save_as(out)  # in its own transfer syntax
    return out.getvalue()


@pytest.mark.parametrize("accept", ['multipart/related; type="application/dicom"', "*/*", None])
def test_instance_without_transfer_syntax_is_explicit_vr_little_endian(
    site: Site, files: dict[str, bytes], accept: str | None
) -> None:
    ((content_type, body),) = _parts(_get(_url(site, files["jpeg2000"]), accept))
    assert content_type == "application/dicom; transfer-syntax=1.2.840.10008.1.2.1"
    ds = pydicom.dcmread(io.BytesIO(body))
    original = pydicom.dcmread(io.BytesIO(files["jpeg2000"]))
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert np.array_equal(ds.pixel_array, original.pixel_array)


@pytest.mark.parametrize(
    ("name", "sent_as"),
    [
        ("MR_small_implicit.dcm", "1.2.840.10008.1.2.1"),  # re-encoded, pixels streamed
        ("image_dfl.dcm", "1.2.840.10008.1.2.1"),  # inflated
        ("MR_small_bigendian.dcm", "1.2.840.10008.1.2.2"),  # pydicom cannot: as stored
    ],
)
def test_native_instances_default_to_explicit_little_endian_where_possible(
    site: Site, name: str, sent_as: str
) -> None:
    data = _pydicom_file(name)
    site.runtime.ingestor.ingest_bytes(data)
    response = _get(_url(site, data), 'multipart/related; type="application/dicom"')
    ((content_type, body),) = _parts(response)
    assert content_type == f"application/dicom; transfer-syntax={sent_as}"
    ds, original = pydicom.dcmread(io.BytesIO(body)), pydicom.dcmread(io.BytesIO(data))
    assert ds.file_meta.TransferSyntaxUID == sent_as
    assert ds.SOPInstanceUID == original.SOPInstanceUID
    assert np.array_equal(ds.pixel_array, original.pixel_array)
    stored = _parts(
        _get(_url(site, data), 'multipart/related; type="application/dicom"; transfer-syntax=*')
    )
    assert stored[0][1] == data
