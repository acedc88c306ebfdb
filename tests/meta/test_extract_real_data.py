"""Real data never breaks the index: an invalid value in any element meta reads leaves
that field out with a logged warning (a string field keeps its text as stored), the rest
of the series document is indexed, and search, facets and cohort export still answer.

Checked over every file of pydicom's and pydicom-data's test sets, and over values
fuzzed per VR (wrong VRs, wrong lengths, bad numbers, dates and character sets, broken
sequences) for every field meta extracts (issue #12, item 7)."""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_charset_files, get_testdata_file, get_testdata_files
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.uid import ExplicitVRLittleEndian
from tests.meta.secured import SecuredSite, secured_site
from tests.meta.test_indexer import indexer_of

from jip.errors import Invalid
from jip.meta.aggs import parse_aggs
from jip.meta.extract import _READ, read_summary, read_summary_bytes, series_document
from jip.meta.fields import FIELDS, ID_FIELD, FieldType, normalize_document
from jip.meta.index_sqlite import SqliteIndex
from jip.meta.query import MATCH_ALL

CORPUS = sorted((Path(p) for p in {*get_testdata_files(), *get_charset_files()}
                 if Path(p).is_file()), key=str)
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom on odd values


def every_field_aggs() -> dict[str, Any]:
    """A facet on every catalogue field (a text field's exact twin), and a histogram on
    every date: what a search page over real data may ask."""
    aggs: dict[str, Any] = {}
    for field in FIELDS.values():
        exact = field.name + ".keyword" if field.type is FieldType.TEXT else field.name
        aggs[field.name] = {"terms": {"field": exact, "size": 5}}
        if field.type is FieldType.DATE:
            aggs[f"{field.name}_by_year"] = {
                "date_histogram": {"field": field.name, "calendar_interval": "year"}}
    return aggs


# -- every test file ------------------------------------------------------------------------


def _instance_uids(path: Path) -> tuple[str, str] | None:
    """The SOP and Series Instance UIDs as pydicom reads them, if it reads them."""
    try:
        dataset = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        uids = (str(dataset.get("SOPInstanceUID", "")).strip(" \0"),
                str(dataset.get(ID_FIELD, "")).strip(" \0"))
    except Exception:
        return None
    return uids if all(0 < len(uid) <= 64 for uid in uids) else None


@pytest.mark.parametrize("path", CORPUS, ids=lambda path: path.name)
def test_every_test_file_with_instance_uids_is_summarised(path: Path) -> None:
    expected = _instance_uids(path)
    if expected is None:  # not an instance (DICOMDIR, no UIDs, not DICOM): refused, named
        with pytest.raises(Invalid):
            read_summary(path)
        return
    summary = read_summary(path)
    assert (summary["SOPInstanceUID"], summary[ID_FIELD]) == expected
    doc = series_document([summary])
    assert normalize_document(doc) == doc


@pytest.fixture(scope="module")
def corpus_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredSite]:
    """Every test file the store accepts, ingested into one site and indexed."""
    root = tmp_path_factory.mktemp("real-data")
    with secured_site(root, series=1) as site:
        spool = root / "corpus"
        spool.mkdir()
        for number, path in enumerate(CORPUS):
            copy = spool / f"{number}.dcm"
            shutil.copyfile(path, copy)
            with contextlib.suppress(Invalid):  # the store refuses what is no instance
                site.runtime.ingestor.ingest_file(copy, project="liver")
        indexer_of(site.runtime).drain()
        yield site


def test_every_stored_test_file_is_indexed(corpus_site: SecuredSite) -> None:
    runtime = corpus_site.runtime
    status = corpus_site.client.get("/api/meta/status", headers=corpus_site.tokens["root"])
    assert status.json()["failed"] == 0, corpus_site.client.get(
        "/api/meta/errors", headers=corpus_site.tokens["root"]).json()
    counts = runtime.catalog.counts()
    assert counts["instances"] > 150  # most of the test files are instances
    assert runtime.index.count() == counts["series"] > 50


@pytest.mark.parametrize("user", ["alice", "vic"])
def test_search_facets_and_cohort_export_answer_over_real_data(
    corpus_site: SecuredSite, user: str
) -> None:
    client, token = corpus_site.client, corpus_site.tokens[user]
    found = client.post("/api/meta/search", headers=token,
                        json={"limit": 500, "aggs": every_field_aggs(), "sort": ["StudyDate"]})
    assert found.status_code == 200, found.text
    total = found.json()["total"]
    assert total == corpus_site.runtime.index.count()
    assert sum(b["doc_count"] for b in found.json()["aggregations"]["Modality"]["buckets"]) + \
        found.json()["aggregations"]["Modality"]["sum_other_doc_count"] <= total
    values = client.get("/api/meta/fields/SeriesDescription/values", headers=token)
    assert values.status_code == 200, values.text
    if user == "alice":  # researchers save cohorts; viewers read them
        cohort = client.post("/api/meta/cohorts", headers=token,
                             json={"name": "everything", "query": {}, "freeze": True})
        assert cohort.status_code == 201, cohort.text
        assert cohort.json()["frozen_series"] == total
        exported = client.get(f"/api/meta/cohorts/{cohort.json()['id']}/export",
                              params={"include_series": True}, headers=token)
        assert exported.status_code == 200, exported.text
        assert len(exported.json()["series"]) == total


# -- values fuzzed per VR ------------------------------------------------------------------

_LONG_VR = {"OB", "OW", "SQ", "UN", "UT", "UC", "UR", "OD", "OF", "OL", "OV"}
BAD_VALUES = [
    b"1A", b"abc ", b"\xff\xfe\x00\x01", b"1e999 ", b"nan ", b"-1", b"20231301", b"x" * 5000,
    b"1\\2\\3\\", b"\x00\x00", b"999Y", b"25:61:00", b"1.2.3", b"\x1b$B\x1b", b"\xed\xa0\x80 ",
    b"", b"\xfe\xff\x00\xe0\x04\x00\x00\x00abcd",  # an item whose content is no dataset
]
WRONG_VRS = ["US", "SQ", "UN", "FD", "IS", "DS", "DA", "LO"]
SEQUENCES = ["ReferencedSeriesSequence", "SegmentSequence",
             "RadiopharmaceuticalInformationSequence", "SharedFunctionalGroupsSequence",
             "PerFrameFunctionalGroupsSequence", "StudiesContainingOtherReferencedInstancesSequence"]
KEYWORDS = [f.name for f in _READ if f.name != ID_FIELD] + [
    "InstanceNumber", "NumberOfFrames", *SEQUENCES]
CHARSETS = [b"ISO_IR 999", b"ISO_IR 100\x00\x00", b"\\ISO 2022 IR 87", b"ISO_IR 192",
            b"GB18030", b"ISO 2022 IR 6\\ISO 2022 IR 100", b"\x00\x00"]


def _element(keyword: str, vr: str, value: bytes) -> bytes:
    """One explicit VR little endian element, its value padded to an even length."""
    tag = tag_for_keyword(keyword)
    assert tag is not None
    value += b" " * (len(value) % 2)
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr.encode()
    if vr in _LONG_VR:
        return head + b"\0\0" + struct.pack("<I", len(value)) + value
    return head + struct.pack("<H", len(value)) + value


def _without(*keywords: str) -> bytes:
    """CT_small.dcm without ``keywords`` and its pixels, explicit VR little endian."""
    dataset = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    for keyword in ("PixelData", *keywords):
        dataset.pop(tag_for_keyword(keyword), None)
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _fuzzed() -> Iterator[tuple[str, str, bytes, bytes, bytes]]:
    """(keyword, VR, value, instance bytes, the instance without the element): each
    element meta reads, spoilt in turn."""
    for keyword in KEYWORDS:
        base = _without(keyword)
        right = dictionary_VR(tag_for_keyword(keyword))
        for vr in [right, *(v for v in WRONG_VRS if v != right)]:
            for value in BAD_VALUES if vr == right else BAD_VALUES[:4] + BAD_VALUES[-1:]:
                yield keyword, vr, value, base + _element(keyword, vr, value), base
    base = _without("SpecificCharacterSet", "SeriesDescription")
    for charset in CHARSETS:
        for text in (b"Caf\xe9", b"\xed\xa0\x80", b"\x1b$B;3ED\x1b(B", b"\xff\xff"):
            data = base + _element("SpecificCharacterSet", "CS", charset)
            yield "SeriesDescription", "LO", text, data + _element("SeriesDescription", "LO", text), base


def test_a_bad_value_in_any_element_leaves_its_field_out_and_the_rest_is_indexed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="jip.meta.extract")
    docs, unspoilt = [], {}
    for number, (keyword, vr, value, data, base) in enumerate(_fuzzed()):
        caplog.clear()
        summary = read_summary_bytes(data)  # never Invalid: the UIDs are intact
        if base not in unspoilt:
            unspoilt[base] = read_summary_bytes(base)
        derived = {"Rows": "NumberOfFrames"}.get(keyword, "")  # frames: 1 for an image
        rest = {k: v for k, v in unspoilt[base].items()
                if k not in (keyword, derived, "FileSize")}
        assert {k: summary.get(k) for k in rest} == rest, (keyword, vr, value)
        field = FIELDS.get(keyword)
        numeric = field is not None and field.type in (
            FieldType.INTEGER, FieldType.FLOAT, FieldType.DATE)
        text_vr = vr not in ("US", "UL", "SS", "SL", "FD", "FL", "SQ")
        if vr == dictionary_VR(tag_for_keyword(keyword)) and text_vr and value in (b"1A", b"abc "):
            if numeric:  # not a number or a date: left out, and said so
                fallback = {"NumberOfFrames": 1}.get(keyword)  # an image has one frame
                assert summary.get(keyword) == fallback, (keyword, value)
                assert any(getattr(r, "field", "") == keyword for r in caplog.records)
            elif field is not None and not field.multi:  # a string field keeps its text
                assert summary[keyword] == value.decode().strip()
        summary[ID_FIELD] = f"{summary[ID_FIELD]}.{number}"  # one series per case
        docs.append(series_document([summary]))
    index = SqliteIndex(":memory:")
    try:
        assert index.upsert(docs) == len(docs)
        result = index.search(MATCH_ALL, limit=10, aggs=parse_aggs(every_field_aggs()))
        assert result.total == len(docs)
    finally:
        index.close()


SPOILT = [  # (keyword, VR, value): what real archives hold
    ("SeriesNumber", "IS", b"99999999999999999999"),  # beyond 64 bits: broke every upsert
    ("InstanceNumber", "IS", b"1A"),
    ("SliceThickness", "DS", b"1e999"),
    ("StudyDate", "DA", b"20231301"),
    ("PatientAge", "AS", b"ABCD"),
    ("SegmentSequence", "SQ", b"\xfe\xff\x00\xe0\x04\x00\x00\x00abcd"),
    ("Manufacturer", "LO", b"\xff\xfe\x00\x01"),
]


def test_spoilt_instances_are_stored_indexed_and_found_without_their_bad_values(
    corpus_site: SecuredSite, tmp_path: Path
) -> None:
    runtime, client = corpus_site.runtime, corpus_site.client
    wanted = {}
    for number, (keyword, vr, value) in enumerate(SPOILT):
        dataset = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        dataset.SOPInstanceUID = f"1.2.826.0.1.3680043.9.7433.7.{number}.1"
        dataset.SeriesInstanceUID = f"1.2.826.0.1.3680043.9.7433.7.{number}"
        dataset.pop(tag_for_keyword(keyword), None)
        path = tmp_path / f"{number}.dcm"
        dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        del dataset.PixelData
        buffer = io.BytesIO()
        dataset.save_as(buffer, enforce_file_format=True)
        path.write_bytes(buffer.getvalue() + _element(keyword, vr, value))
        runtime.ingestor.ingest_file(path, project="liver")
        wanted[str(dataset.SeriesInstanceUID)] = keyword
    indexer_of(runtime).drain()
    assert client.get("/api/meta/status", headers=corpus_site.tokens["root"]).json()["failed"] == 0
    found = client.post("/api/meta/search", headers=corpus_site.tokens["alice"], json={
        "query": {"terms": {ID_FIELD: sorted(wanted)}}, "limit": 100}).json()
    docs = {hit[ID_FIELD]: hit for hit in found["hits"]}
    assert set(docs) == set(wanted)
    for uid, keyword in wanted.items():
        assert docs[uid]["Modality"] == "CT" and docs[uid]["Rows"] == 128
        if keyword in FIELDS and keyword not in ("Manufacturer", "PatientAge"):
            assert keyword not in docs[uid], keyword
    assert docs[next(u for u, k in wanted.items() if k == "PatientAge")]["PatientAge"] == "ABCD"


@pytest.mark.parametrize("value", [b"", b"x" * 65, b"1.2\x00" * 30, b"\x00\x00  "])
def test_an_instance_without_a_usable_series_uid_is_refused_naming_it(value: bytes) -> None:
    data = _without(ID_FIELD) + _element(ID_FIELD, "UI", value)
    with pytest.raises(Invalid, match=ID_FIELD):
        read_summary_bytes(data)
