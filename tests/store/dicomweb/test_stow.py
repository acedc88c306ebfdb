"""STOW-RS: per-part results, bad parts, limits and status codes (PS3.18 §10.5)."""

from __future__ import annotations

import io
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

from jip.store.dicomweb.multipart import Part, new_boundary, write_parts

FAILED, REFERENCED, FAILURE_REASON, ERROR_COMMENT = "00081198", "00081199", "00081197", "00000902"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A site of its own for this module, served by uvicorn over real HTTP."""
    yield from serve(tmp_path_factory.mktemp("dicomweb") / "data")


def stow(
    url: str, bodies: list[bytes], *, part_type: str = "application/dicom", **kwargs: object
) -> httpx.Response:
    boundary = new_boundary()
    body = b"".join(write_parts([Part(part_type, [b]) for b in bodies], boundary))
    headers = {"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'}
    headers.update(kwargs.pop("headers", {}))  # type: ignore[arg-type]
    return httpx.post(url, content=body, headers=headers, timeout=60, **kwargs)  # type: ignore[arg-type]


def _comments(response: httpx.Response) -> list[str]:
    return [item[ERROR_COMMENT]["Value"][0] for item in response.json()[FAILED]["Value"]]


def test_all_stored_is_200_with_referenced_sop_sequence(site: Site) -> None:
    files = ct_series(slices=3)
    response = stow(f"{site.url}/studies", files)
    assert response.status_code == 200
    body = response.json()
    study = uids_of(files[0])[0]
    assert body["00081190"]["Value"] == [f"{site.url}/studies/{study}"]
    referenced = body[REFERENCED]["Value"]
    assert [item["00081155"]["Value"][0] for item in referenced] == [uids_of(f)[2] for f in files]
    assert all(item["00081190"]["Value"][0].startswith(site.url) for item in referenced)
    assert FAILED not in body


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")  # the server reads it too
def test_bad_parts_fail_alone_with_their_reason(site: Site) -> None:
    good = ct_series(slices=1)[0]
    truncated = sample_file_bytes("explicit")[:-100]
    no_sop = pydicom.dcmread(io.BytesIO(ct_series(slices=1)[0]))
    del no_sop.SOPInstanceUID
    path_like = pydicom.dcmread(io.BytesIO(ct_series(slices=1)[0]))
    with pytest.warns(UserWarning, match="Invalid value for VR UI"):
        path_like.SOPInstanceUID = "../../etc/passwd"
    parts = [good, b"this is not DICOM at all" * 10, truncated, part10(no_sop), part10(path_like)]
    before = site.runtime.catalog.counts()["instances"]
    response = stow(f"{site.url}/studies", parts)
    assert response.status_code == 202
    body = response.json()
    assert [i["00081155"]["Value"][0] for i in body[REFERENCED]["Value"]] == [uids_of(good)[2]]
    failed = body[FAILED]["Value"]
    assert [item[FAILURE_REASON]["Value"][0] for item in failed] == [0xC000] * 4
    comments = _comments(response)
    assert comments[0].startswith("part 2: not a DICOM")
    assert "truncated" in comments[1]
    assert "SOPInstanceUID" in comments[2] and "SOPInstanceUID" in comments[3]
    assert "00081155" not in failed[3]  # the path-like UID is not echoed as a UID
    assert any("part 3 not stored" in w for w in response.headers.get_list("warning"))
    assert site.runtime.catalog.counts()["instances"] == before + 1
    assert not any(".." in key for key in site.runtime.storage.keys())  # noqa: SIM118 - not a dict


def test_nothing_stored_is_409(site: Site) -> None:
    response = stow(f"{site.url}/studies", [b"garbage" * 100])
    assert response.status_code == 409
    assert response.json()[FAILED]["Value"][0][FAILURE_REASON]["Value"] == [0xC000]


def test_study_uid_mismatch_fails_that_instance(site: Site) -> None:
    mine, other = ct_series(slices=1)[0], ct_series(slices=1)[0]
    study = uids_of(mine)[0]
    response = stow(f"{site.url}/studies/{study}", [mine, other])
    assert response.status_code == 202
    body = response.json()
    (failed,) = body[FAILED]["Value"]
    assert failed["00081155"]["Value"] == [uids_of(other)[2]]
    assert failed[FAILURE_REASON]["Value"] == [0xC409]
    assert body["00081190"]["Value"] == [f"{site.url}/studies/{study}"]
    search = httpx.get(f"{site.url}/studies", params={"StudyInstanceUID": uids_of(other)[0]})
    assert search.json() == []


def test_known_instance_with_other_content_keeps_the_first(site: Site) -> None:
    first = ct_series(slices=1)[0]
    changed = pydicom.dcmread(io.BytesIO(first))
    changed.PatientName = "Changed^Name"
    assert stow(f"{site.url}/studies", [first]).status_code == 200
    assert stow(f"{site.url}/studies", [first]).status_code == 200  # idempotent
    response = stow(f"{site.url}/studies", [part10(changed)])
    assert response.status_code == 202
    assert "already stored with different content" in response.headers["warning"]
    study, series, sop = uids_of(first)
    stored = httpx.get(f"{site.url}/studies/{study}/series/{series}/instances/{sop}/metadata")
    assert stored.json()[0]["00100010"]["Value"][0]["Alphabetic"] != "Changed^Name"


def test_non_dicom_part_type_is_a_failure_entry(site: Site) -> None:
    good = ct_series(slices=1)[0]
    boundary = new_boundary()
    parts = [Part("application/dicom", [good]), Part("application/pdf", [b"%PDF-1.4"])]
    response = httpx.post(
        f"{site.url}/studies",
        content=b"".join(write_parts(parts, boundary)),
        headers={"Content-Type": f"multipart/related; type=application/dicom; boundary={boundary}"},
    )
    assert response.status_code == 202
    assert "application/pdf" in _comments(response)[0]


@pytest.mark.parametrize(
    "content_type",
    [
        "application/dicom",
        'multipart/related; type="application/dicom+json"; boundary=abc',
        "multipart/form-data; boundary=abc",
    ],
)
def test_wrong_request_media_type_is_415(site: Site, content_type: str) -> None:
    response = httpx.post(
        f"{site.url}/studies", content=b"x", headers={"Content-Type": content_type}
    )
    assert response.status_code == 415


def test_truncated_body_stores_nothing(site: Site) -> None:
    files = ct_series(slices=2)
    boundary = new_boundary()
    body = b"".join(write_parts([Part("application/dicom", [f]) for f in files], boundary))
    before = site.runtime.catalog.counts()["instances"]
    response = httpx.post(
        f"{site.url}/studies",
        content=body[:-200],
        headers={"Content-Type": f"multipart/related; type=application/dicom; boundary={boundary}"},
    )
    assert response.status_code == 400
    assert "closing boundary" in response.json()["detail"]
    assert site.runtime.catalog.counts()["instances"] == before


def test_xml_response_on_request(site: Site) -> None:
    response = stow(
        f"{site.url}/studies", ct_series(slices=1), headers={"Accept": "application/dicom+xml"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/dicom+xml")
    assert b'keyword="ReferencedSOPSequence"' in response.content


@pytest.fixture(scope="module")
def small_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator:  # type: ignore[type-arg]
    """A site that takes at most 50 kB per STOW-RS request."""
    from jip.config import StoreSettings

    root: Path = tmp_path_factory.mktemp("small") / "data"
    yield from serve(root, store=StoreSettings(max_upload_bytes=50_000))


def test_oversized_request_is_413_and_stores_nothing(small_site: Site) -> None:
    files = ct_series(slices=4, rows=64, columns=64)  # ~8 kB pixel data each
    assert stow(f"{small_site.url}/studies", files[:1]).status_code == 200
    big = ct_series(slices=8, rows=64, columns=64)
    response = stow(f"{small_site.url}/studies", big)
    assert response.status_code == 413
    assert small_site.runtime.catalog.counts()["instances"] == 1


def test_oversized_chunked_request_is_413(small_site: Site) -> None:
    big = ct_series(slices=8, rows=64, columns=64)
    boundary = new_boundary()

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies while reading
        yield from write_parts([Part("application/dicom", [f]) for f in big], boundary)

    response = httpx.post(
        f"{small_site.url}/studies",
        content=chunks(),
        headers={"Content-Type": f"multipart/related; type=application/dicom; boundary={boundary}"},
    )
    assert response.status_code == 413
    assert small_site.runtime.catalog.counts()["instances"] == 1
    assert not list((small_site.data_dir / "tmp").glob("stow-*"))  # spool removed


def test_retrieve_url_is_always_in_the_response(site: Site) -> None:
    """Type 2 (PS3.18 Table I.1-1): present in every response, empty without one study."""
    first, second = ct_series(slices=1)[0], ct_series(slices=1, patient=None, modality="MR")[0]
    assert uids_of(first)[0] != uids_of(second)[0]
    two_studies = stow(f"{site.url}/studies", [first, second]).json()
    assert two_studies["00081190"] == {"vr": "UR"}
    nothing = stow(f"{site.url}/studies", [b"not DICOM"]).json()
    assert nothing["00081190"] == {"vr": "UR"}
    study = uids_of(first)[0]
    one = stow(f"{site.url}/studies/{study}", [first]).json()
    assert one["00081190"]["Value"] == [f"{site.url}/studies/{study}"]
