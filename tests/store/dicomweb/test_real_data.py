"""Real data never breaks a read: every pydicom and pydicom-data test file, and values
broken per VR, stored in one site; QIDO-RS (includefield=all), WADO-RS metadata,
retrieve and rendered answer for each, never a 500, and the rest of a response holds.

pydicom's files hold what modalities send: an Integer String ``1A``, odd encodings,
undecodable pixel data. The fuzzed instances add one broken raw value each (written
with pydicom's RawDataElement), plus one with all of them.
"""

from __future__ import annotations

import contextlib
import io
import json
import struct
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom.data import get_testdata_files
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import generate_uid
from tests.store.dicomweb.support import ct_series, part10

from jip.app import build_app
from jip.config import AuthSettings, Settings
from jip.runtime import Runtime, build_runtime

DW = "/dicom-web"
# (keyword, VR it must have, broken raw value) — invalid per PS3.5 §6.2 or wrong length.
BROKEN: list[tuple[str, str, bytes]] = [
    ("AcquisitionNumber", "IS", b"1A"),
    ("SliceThickness", "DS", b"NaN "),
    ("PixelSpacing", "DS", b"0.5\\abc "),
    ("WindowCenter", "DS", b"4O"),
    ("RescaleSlope", "DS", b"inf "),
    ("PatientBirthDate", "DA", b"19ab0101"),
    ("StudyTime", "TM", b"25:61:00"),
    ("AcquisitionDateTime", "DT", b"yesterday!"),
    ("PatientAge", "AS", b"12Q "),
    ("PlanarConfiguration", "US", b"\x01\x02\x03"),
    ("RegionFlags", "UL", b"\x01\x02\x03\x04\x05"),
    ("TagAngleSecondAxis", "SS", b"\x01"),
    ("ReferencePixelX0", "SL", b"\x01\x02\x03"),
    ("RecommendedDisplayFrameRateInFloat", "FL", struct.pack("<f", float("nan"))),
    ("ExposureInmAs", "FD", struct.pack("<d", float("inf"))),
    ("FrameIncrementPointer", "AT", b"\x28\x00\x09"),
    ("FrameOfReferenceUID", "UI", b"1.2.abc..3\x00"),
    ("RetrieveAETitle", "AE", b"MUCH-TOO-LONG-AE-TITLE"),
    ("BodyPartExamined", "CS", b"a\\b\\"),
    ("ReferringPhysicianName", "PN", b"A=B=C=D=E"),
    ("ReferencedImageSequence", "SQ", b"garbage!"),
]


_SIZES = {"US": 2, "SS": 2, "UL": 4, "SL": 4, "FL": 4, "FD": 8, "AT": 4}


def _patch(data: bytes, keyword: str, vr: str, value: bytes) -> bytes:
    """Give a top-level element of a short explicit VR another value, length included
    (pydicom will not write a value of the wrong length)."""
    tag = tag_for_keyword(keyword)
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr.encode()
    at = data.index(head, 132)
    (length,) = struct.unpack("<H", data[at + 6 : at + 8])
    return data[:at] + head + struct.pack("<H", len(value)) + value + data[at + 8 + length :]


def _raw(keyword: str, vr: str, value: bytes) -> RawDataElement:
    tag = Tag(tag_for_keyword(keyword))
    assert dictionary_VR(tag) == vr, keyword
    return RawDataElement(tag, vr, len(value), value, 0, False, True)


def _fuzzed() -> list[bytes]:
    """One instance per broken value, then one with all, one with an unknown character
    set, and one with the broken IS inside a sequence item."""
    base = pydicom.dcmread(io.BytesIO(ct_series(slices=1, rows=8, columns=8)[0]))
    cases: list[list[tuple[str, str, bytes]]] = [[case] for case in BROKEN] + [BROKEN]
    cases.append(
        [
            ("SpecificCharacterSet", "CS", b"ISO_IR 999"),
            ("PatientName", "PN", b"J\xe9r\xf4me^D\xfcrer"),
            ("InstitutionName", "LO", b"\xff\xfe\xfa"),
        ]
    )
    cases.append(
        [("SpecificCharacterSet", "CS", b"ISO_IR 192"), ("StudyDescription", "LO", b"\xc3\x28")]
    )
    out = []
    for number, case in enumerate([*cases, []], start=1):
        ds = Dataset()
        ds.update(base)
        ds.file_meta = base.file_meta
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = number
        patches = [c for c in case if c[1] in _SIZES and len(c[2]) % _SIZES[c[1]]]
        for keyword, vr, value in case:
            size = _SIZES.get(vr)
            placeholder = b"\0" * size if size and len(value) % size else value
            ds[tag_for_keyword(keyword)] = _raw(keyword, vr, placeholder)
        if not case:  # the last: a broken IS inside a sequence item
            item = Dataset()
            item[tag_for_keyword("AcquisitionNumber")] = _raw("AcquisitionNumber", "IS", b"1A")
            item.ReferencedSOPInstanceUID = generate_uid()
            ds.ReferencedImageSequence = [item]
        data = part10(ds)
        for keyword, vr, value in patches:
            data = _patch(data, keyword, vr, value)
        out.append(data)
    return out


def _strict(response: Any) -> Any:
    """The body as JSON, refusing NaN and Infinity (not JSON, though Python writes them)."""
    assert response.status_code == 200, (
        response.request.url,
        response.status_code,
        response.text[:300],
    )

    def refuse(name: str) -> None:
        raise AssertionError(f"{name} in JSON from {response.request.url}")

    return json.loads(response.content, parse_constant=refuse) if response.content else []


@pytest.fixture(scope="module")
def site(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Runtime, TestClient, list[str]]]:
    root = tmp_path_factory.mktemp("real-data")
    runtime = build_runtime(Settings(data_dir=root / "data", auth=AuthSettings(enabled=False)))
    fuzzed: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about every invalid value it reads
        for path in map(Path, get_testdata_files()):
            if path.is_file():
                # Not DICOM, truncated...: refused at ingest. (ingest_file would move
                # pydicom's own file into the store: its bytes go in instead.)
                with contextlib.suppress(Exception):
                    runtime.ingestor.ingest_bytes(path.read_bytes())
        for data in _fuzzed():
            fuzzed.append(runtime.ingestor.ingest_bytes(data).sop_instance_uid)
    try:
        yield runtime, TestClient(build_app(runtime)), fuzzed
    finally:
        runtime.close()


def test_enough_of_the_test_files_are_stored(site: tuple[Runtime, TestClient, list[str]]) -> None:
    runtime, _, fuzzed = site
    assert any("data_store" in path for path in get_testdata_files())  # pydicom-data
    # 208 of them are stored; several share a SOP Instance UID (kept once): 138 instances
    assert runtime.catalog.counts()["instances"] > 120 + len(fuzzed)
    assert len(fuzzed) == len(BROKEN) + 4


@pytest.mark.parametrize(
    "query",
    [
        "studies?includefield=all&limit=5000",
        "series?includefield=all&limit=5000",
        "instances?includefield=all&limit=5000",
        "studies?includefield=00081030,00080060",  # the study list of web viewers
        "studies?includefield=00081030,00080060&PatientName=*",
    ],
)
def test_search_answers_for_every_stored_instance(
    site: tuple[Runtime, TestClient, list[str]], query: str
) -> None:
    runtime, client, _ = site
    found = _strict(client.get(f"{DW}/{query}"))
    level = query.split("?")[0]
    expected = runtime.catalog.counts()["instances" if level == "instances" else level]
    assert len(found) == expected


def test_metadata_retrieve_and_rendered_never_fail_the_server(
    site: tuple[Runtime, TestClient, list[str]],
) -> None:
    runtime, client, _ = site
    series = _strict(client.get(f"{DW}/series?limit=5000"))
    for obj in series:
        study, uid = obj["0020000D"]["Value"][0], obj["0020000E"]["Value"][0]
        path = f"{DW}/studies/{study}/series/{uid}"
        members = runtime.catalog.instances_of_series(uid)
        metadata = _strict(client.get(f"{path}/metadata"))
        assert {m["00080018"]["Value"][0] for m in metadata} == {
            i.sop_instance_uid for i in members
        }
        for instance in members:
            url = f"{path}/instances/{instance.sop_instance_uid}"
            rendered = client.get(f"{url}/rendered")
            assert rendered.status_code in (200, 404, 406), (url, rendered.text[:300])
            assert client.get(url).status_code == 200, url
    thumbnails = {
        client.get(f"{DW}/studies/{o['0020000D']['Value'][0]}/thumbnail").status_code
        for o in series
    }
    assert thumbnails <= {200, 404, 406}


def test_an_invalid_value_is_returned_as_stored_and_the_rest_holds(
    site: tuple[Runtime, TestClient, list[str]],
) -> None:
    runtime, client, fuzzed = site
    headers = {}
    for sop in fuzzed:
        stored = runtime.catalog.instance(sop)
        path = f"{DW}/studies/{stored.study_instance_uid}/series/{stored.series_instance_uid}"
        (header,) = _strict(client.get(f"{path}/instances/{sop}/metadata"))
        assert header["00080018"]["Value"] == [sop]  # the rest of the header holds
        assert "00100020" in header and "00280010" in header
        headers[sop] = header
    all_broken = headers[fuzzed[len(BROKEN)]]
    assert all_broken["00200012"]["Value"] == ["1A"]  # IS as stored
    assert all_broken["00180050"]["Value"] == ["NaN"]  # DS as stored, JSON has no NaN
    assert all_broken["00280030"]["Value"] == [0.5, "abc"]
    assert all_broken["00089459"]["Value"] == ["nan"]  # FL NaN as text
    nested = headers[fuzzed[-1]]["00081140"]["Value"][0]
    assert nested["00200012"]["Value"] == ["1A"] and "00081155" in nested
    found = _strict(
        client.get(f"{DW}/instances?includefield=all&SOPInstanceUID={','.join(fuzzed)}")
    )
    assert len(found) == len(fuzzed)
