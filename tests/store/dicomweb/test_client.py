"""DICOMweb end to end with dicomweb-client against the app served by uvicorn."""

from __future__ import annotations

import io
from collections.abc import Iterator

import httpx
import numpy as np
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from tests.store.dicomweb.support import (
    Site,
    ct_series,
    sample_file_bytes,
    serve,
    uids_of,
)

from jip.samples import random_patient

KINDS = ["explicit", "jpeg2000", "jpeg_baseline", "rle", "multiframe_j2k"]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A site of its own for this module, served by uvicorn over real HTTP."""
    yield from serve(tmp_path_factory.mktemp("dicomweb") / "data")


@pytest.fixture(scope="module")
def stored(site: Site) -> Iterator[dict[str, bytes]]:
    """Test files of every transfer syntax plus two CT series of two patients, stored."""
    import random

    files = {kind: sample_file_bytes(kind) for kind in KINDS}
    doe = random_patient(random.Random(1), 1)
    doe = type(doe)(patient_id="DOE-1", name="Doe^Jane", birth_date="19700101", sex="F")
    roe = type(doe)(patient_id="ROE-2", name="Roe^Richard", birth_date="19600101", sex="M")
    for index, data in enumerate(ct_series(patient=doe, study_date="20240301", slices=3)):
        files[f"doe{index}"] = data
    for index, data in enumerate(
        ct_series(patient=roe, study_date="20230115", modality="MR", slices=2)
    ):
        files[f"roe{index}"] = data
    client = DICOMwebClient(url=site.url)
    response = client.store_instances([pydicom.dcmread(io.BytesIO(b)) for b in files.values()])
    assert len(response.ReferencedSOPSequence) == len(files)
    yield files


@pytest.fixture
def client(site: Site) -> DICOMwebClient:
    return DICOMwebClient(url=site.url)


def test_store_instances_reports_every_instance(stored: dict[str, bytes], site: Site) -> None:
    counts = site.runtime.catalog.counts()
    assert counts["instances"] == len(stored)


def test_retrieve_instance_returns_the_stored_bytes(
    client: DICOMwebClient,
    stored: dict[str, bytes],
    site: Site,
) -> None:
    for kind in ("explicit", "jpeg2000", "doe0"):
        study, series, sop = uids_of(stored[kind])
        response = httpx.get(
            f"{site.url}/studies/{study}/series/{series}/instances/{sop}",
            # The stored syntax is asked for by name: without it PS3.18 says Explicit VR LE.
            headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
        )
        assert response.status_code == 200
        parts = list(client._decode_multipart_message(_as_requests(response), stream=False))
        assert parts == [stored[kind]]
        instance = client.retrieve_instance(study, series, sop)
        assert instance.SOPInstanceUID == sop


def _as_requests(response: httpx.Response) -> object:
    """Just enough of a requests.Response for dicomweb-client's multipart decoder."""

    class Shim:
        headers = response.headers
        content = response.content

        def __enter__(self) -> object:
            return self

        def __exit__(self, *args: object) -> None:
            return None

    return Shim()


def test_retrieve_series_yields_every_instance(
    client: DICOMwebClient, stored: dict[str, bytes]
) -> None:
    study, series, _ = uids_of(stored["doe0"])
    instances = client.retrieve_series(study, series)
    assert sorted(ds.InstanceNumber for ds in instances) == [1, 2, 3]


def test_search_for_studies_by_patient_name_wildcard(
    client: DICOMwebClient, stored: dict[str, bytes]
) -> None:
    found = client.search_for_studies(search_filters={"PatientName": "Doe*"})
    assert [s["00100020"]["Value"][0] for s in found] == ["DOE-1"]
    study = found[0]
    assert study["00201206"]["Value"] == [1]  # NumberOfStudyRelatedSeries
    assert study["00201208"]["Value"] == [3]  # NumberOfStudyRelatedInstances
    assert study["00080061"]["Value"] == ["CT"]  # ModalitiesInStudy
    assert study["00080056"]["Value"] == ["ONLINE"]
    assert study["00081190"]["Value"][0].endswith(f"/studies/{uids_of(stored['doe0'])[0]}")


def test_search_for_studies_by_date_range_and_tag(
    client: DICOMwebClient, stored: dict[str, bytes]
) -> None:
    found = client.search_for_studies(search_filters={"StudyDate": "20240101-20241231"})
    assert {s["00100020"]["Value"][0] for s in found} == {"DOE-1"}
    by_tag = client.search_for_studies(search_filters={"00100020": "ROE-2"})
    assert [s["00100010"]["Value"][0]["Alphabetic"] for s in by_tag] == ["Roe^Richard"]


def test_search_for_series_with_modality_and_study(
    client: DICOMwebClient, stored: dict[str, bytes]
) -> None:
    study, series, _ = uids_of(stored["roe0"])
    everywhere = client.search_for_series(search_filters={"Modality": "MR", "PatientID": "ROE*"})
    assert [s["0020000E"]["Value"][0] for s in everywhere] == [series]
    in_study = client.search_for_series(study_instance_uid=study)
    assert in_study[0]["00201209"]["Value"] == [2]  # NumberOfSeriesRelatedInstances
    assert in_study[0]["00081190"]["Value"][0].endswith(f"/series/{series}")


def test_search_for_instances_in_all_hierarchies(
    client: DICOMwebClient, stored: dict[str, bytes]
) -> None:
    study, series, _ = uids_of(stored["doe0"])
    expected = sorted(uids_of(stored[f"doe{i}"])[2] for i in range(3))
    for found in (
        client.search_for_instances(study_instance_uid=study, series_instance_uid=series),
        client.search_for_instances(study_instance_uid=study),
        client.search_for_instances(search_filters={"SeriesInstanceUID": series}),
    ):
        assert sorted(i["00080018"]["Value"][0] for i in found) == expected
    assert len(client.search_for_instances()) == len(stored)


def test_search_pages_with_limit_and_offset(
    client: DICOMwebClient, stored: dict[str, bytes]
) -> None:
    everything = client.search_for_instances()
    pages = [client.search_for_instances(limit=4, offset=offset) for offset in range(0, 20, 4)]
    assert [i for page in pages for i in page] == everything


def test_series_metadata_has_absolute_bulk_data_uris(
    client: DICOMwebClient,
    stored: dict[str, bytes],
    site: Site,
) -> None:
    study, series, _ = uids_of(stored["doe0"])
    metadata = client.retrieve_series_metadata(study, series)
    assert len(metadata) == 3
    pixel = metadata[0]["7FE00010"]
    assert pixel["BulkDataURI"].startswith(f"{site.url}/studies/{study}/series/{series}/")
    assert metadata[0]["00100010"]["Value"][0]["Alphabetic"] == "Doe^Jane"
    value = client.retrieve_bulkdata(pixel["BulkDataURI"])
    first = pydicom.dcmread(io.BytesIO(stored["doe0"]))
    assert b"".join(value) in {ds.PixelData for ds in _datasets(stored, "doe")} | {first.PixelData}


def _datasets(stored: dict[str, bytes], prefix: str) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(io.BytesIO(b)) for k, b in stored.items() if k.startswith(prefix)]


def test_study_and_instance_metadata(client: DICOMwebClient, stored: dict[str, bytes]) -> None:
    study, series, sop = uids_of(stored["doe1"])
    assert len(client.retrieve_study_metadata(study)) == 3
    one = client.retrieve_instance_metadata(study, series, sop)  # the client unwraps it
    assert one["00080018"]["Value"] == [sop]


@pytest.mark.parametrize("kind", ["explicit", "jpeg2000", "jpeg_baseline", "rle"])
def test_retrieve_frames_in_the_stored_syntax(
    client: DICOMwebClient, stored: dict[str, bytes], kind: str
) -> None:
    study, series, sop = uids_of(stored[kind])
    (frame,) = client.retrieve_instance_frames(study, series, sop, [1])
    ds = pydicom.dcmread(io.BytesIO(stored[kind]))
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        assert frame == pydicom.encaps.get_frame(ds.PixelData, 0, number_of_frames=1)
    else:
        assert frame == ds.PixelData


def test_retrieve_frames_decoded_for_octet_stream(
    client: DICOMwebClient, stored: dict[str, bytes]
) -> None:
    study, series, sop = uids_of(stored["jpeg2000"])
    (frame,) = client.retrieve_instance_frames(
        study, series, sop, [1], media_types=("application/octet-stream",)
    )
    expected = pydicom.dcmread(io.BytesIO(stored["jpeg2000"])).pixel_array
    assert np.array_equal(
        np.frombuffer(frame, dtype=expected.dtype).reshape(expected.shape), expected
    )


def test_retrieve_several_frames_of_a_multiframe_instance(
    client: DICOMwebClient, stored: dict[str, bytes]
) -> None:
    study, series, sop = uids_of(stored["multiframe_j2k"])
    frames = client.retrieve_instance_frames(study, series, sop, [3, 1])
    ds = pydicom.dcmread(io.BytesIO(stored["multiframe_j2k"]))
    expected = [pydicom.encaps.get_frame(ds.PixelData, i, number_of_frames=10) for i in (2, 0)]
    assert frames == expected


def test_rendered_instance_is_a_png_of_the_right_size(
    client: DICOMwebClient, stored: dict[str, bytes]
) -> None:
    study, series, sop = uids_of(stored["jpeg2000"])
    png = client.retrieve_instance_rendered(study, series, sop, media_types=("image/png",))
    image = Image.open(io.BytesIO(png))
    assert (image.format, image.size) == ("PNG", (256, 1024))  # Columns x Rows


def test_rendered_frames_honour_viewport(client: DICOMwebClient, stored: dict[str, bytes]) -> None:
    study, series, sop = uids_of(stored["doe0"])
    jpeg = client.retrieve_instance_frames_rendered(
        study, series, sop, [1], params={"viewport": "16,16"}
    )
    image = Image.open(io.BytesIO(jpeg))
    assert (image.format, image.size) == ("JPEG", (16, 16))


def test_delete_series_then_study(
    client: DICOMwebClient, stored: dict[str, bytes], site: Site
) -> None:
    study, series, _ = uids_of(stored["roe0"])
    blobs_before = len(list(site.runtime.storage.keys()))
    client.delete_series(study, series)
    assert client.search_for_series(study_instance_uid=study) == []
    assert len(list(site.runtime.storage.keys())) == blobs_before - 2
    missing = httpx.delete(f"{site.url}/studies/{study}/series/{series}")
    assert missing.status_code == 404
    doe_study = uids_of(stored["doe0"])[0]
    client.delete_study(doe_study)
    assert client.search_for_studies(search_filters={"StudyInstanceUID": doe_study}) == []
    assert httpx.get(f"{site.url}/studies/{doe_study}/metadata").status_code == 404
