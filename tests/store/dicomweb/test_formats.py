"""The pure pieces of DICOMweb: media ranges, multipart streams, XML, frame plans."""

from __future__ import annotations

import asyncio
import random
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path

import pydicom
import pytest

from jip.errors import Invalid, NotAcceptable, TooLarge
from jip.store.dicomweb.dicom_xml import NAMESPACE, native_model
from jip.store.dicomweb.media_types import parse_accept
from jip.store.dicomweb.multipart import Part, new_boundary, read_parts, write_parts
from jip.store.dicomweb.stow import FailureReason, PartOutcome, response_dataset
from jip.store.dicomweb.wado import plan_frames

JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
EXPLICIT = "1.2.840.10008.1.2.1"


def test_multipart_accept_is_unwrapped_and_sorted_by_q() -> None:
    ranges = parse_accept(
        'image/png;q=0.2, multipart/related; type="application/dicom"; '
        "transfer-syntax=1.2.840.10008.1.2.1, */*;q=0.1"
    )
    assert [r.media_type for r in ranges] == ["application/dicom", "image/png", "*/*"]
    assert ranges[0].multipart and ranges[0].transfer_syntax == EXPLICIT
    assert parse_accept(None) == parse_accept("") == parse_accept("*/*")
    assert parse_accept("image/jpeg", ["image/png"])[0].media_type == "image/png"


def test_accept_with_only_q_zero_is_not_acceptable() -> None:
    with pytest.raises(NotAcceptable):
        parse_accept("image/png;q=0")
    with pytest.raises(Invalid):
        parse_accept("image/png;q=high")


@pytest.mark.parametrize(
    ("accept", "media_type", "syntax", "decode"),
    [
        ("*/*", "image/jpeg", JPEG_BASELINE, False),
        ("multipart/related; type=application/octet-stream; transfer-syntax=*",
         "application/octet-stream", JPEG_BASELINE, False),
        ('multipart/related; type="application/octet-stream"', "application/octet-stream",
         EXPLICIT, True),
        ("image/x-jls, image/jpeg", "image/jpeg", JPEG_BASELINE, False),
    ],
)  # fmt: skip
def test_frame_plans_for_jpeg_baseline(
    accept: str, media_type: str, syntax: str, decode: bool
) -> None:
    plan = plan_frames(parse_accept(accept), JPEG_BASELINE, usable=True)
    assert (plan.media_type, plan.transfer_syntax_uid, plan.decode) == (media_type, syntax, decode)


def test_frame_plan_without_any_producible_syntax_is_not_acceptable() -> None:
    with pytest.raises(NotAcceptable):
        plan_frames(parse_accept("image/jp2"), EXPLICIT, usable=True)
    with pytest.raises(NotAcceptable):
        plan_frames(parse_accept("image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.70"),
                    JPEG_BASELINE, usable=True)  # fmt: skip


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.mark.parametrize("chunk_size", [1, 3, 100, 65536])
def test_multipart_round_trip_at_any_chunking(tmp_path: Path, chunk_size: int) -> None:
    rng = random.Random(chunk_size)
    bodies = [b"", b"x", rng.randbytes(5000), b"--not-the-boundary\r\n" * 3]
    boundary = new_boundary()
    message = b"preamble\r\n" + b"".join(
        write_parts([Part("application/dicom", [b]) for b in bodies], boundary)
    )
    spool = tmp_path / str(chunk_size)
    spool.mkdir()
    parts = asyncio.run(read_parts(_chunks(message, chunk_size), boundary, spool, 10**6))
    assert [p.path.read_bytes() for p in parts] == bodies
    assert [p.content_type for p in parts] == ["application/dicom"] * 4


def test_multipart_reader_limits_and_truncation(tmp_path: Path) -> None:
    boundary = new_boundary()
    message = b"".join(write_parts([Part("application/dicom", [b"a" * 1000])], boundary))
    with pytest.raises(TooLarge):
        asyncio.run(read_parts(_chunks(message, 100), boundary, tmp_path, 500))
    with pytest.raises(Invalid, match="closing boundary"):
        asyncio.run(read_parts(_chunks(message[:-30], 100), boundary, tmp_path, 10**6))
    with pytest.raises(Invalid, match="no multipart boundary"):
        asyncio.run(read_parts(_chunks(b"plain body", 100), boundary, tmp_path, 10**6))


def test_native_dicom_model_from_dicom_json() -> None:
    ds = pydicom.Dataset()
    ds.PatientName = "Doe^Jane^^Dr"
    ds.PatientID = "P<1>&"
    ds.ReferencedSOPSequence = [pydicom.Dataset()]
    ds.ReferencedSOPSequence[0].ReferencedSOPInstanceUID = "1.2.3"
    obj = ds.to_json_dict()
    obj["7FE00010"] = {"vr": "OW", "BulkDataURI": "http://h/bulk"}
    root = ET.fromstring(native_model(obj))
    ns = {"d": NAMESPACE}
    name = root.find("d:DicomAttribute[@keyword='PatientName']/d:PersonName/d:Alphabetic", ns)
    assert name is not None
    assert [(c.tag.split("}")[1], c.text) for c in name] == [
        ("FamilyName", "Doe"), ("GivenName", "Jane"), ("NamePrefix", "Dr")
    ]  # fmt: skip
    patient_id = root.find("d:DicomAttribute[@tag='00100020']/d:Value", ns)
    assert patient_id is not None and patient_id.text == "P<1>&"
    item = root.find("d:DicomAttribute[@vr='SQ']/d:Item[@number='1']/d:DicomAttribute", ns)
    assert item is not None and item.get("keyword") == "ReferencedSOPInstanceUID"
    bulk = root.find("d:DicomAttribute[@tag='7FE00010']/d:BulkData", ns)
    assert bulk is not None and bulk.get("uri") == "http://h/bulk"


def test_stow_response_reads_back_with_pydicom() -> None:
    outcomes = [
        PartOutcome(1, "1.2.840.10008.5.1.4.1.1.2", "1.2.3", "1.2", failure=FailureReason(0xC000),
                    message="not a DICOM Part 10 file: " + "x" * 100),
        PartOutcome(2, None, None, None, failure=FailureReason.PROCESSING_FAILURE, message="boom"),
    ]  # fmt: skip
    dataset = pydicom.Dataset.from_json(response_dataset(outcomes, "http://h/dicom-web", "1.2"))
    assert dataset.RetrieveURL == "http://h/dicom-web/studies/1.2"
    first, second = dataset.FailedSOPSequence
    assert (first.ReferencedSOPInstanceUID, first.FailureReason) == ("1.2.3", 0xC000)
    assert len(first[0x00000902].value) <= 64
    assert second.FailureReason == 0x0110 and "ReferencedSOPInstanceUID" not in second
