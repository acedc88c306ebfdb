"""Diffusion fields, from DWI headers to series documents a cohort query can select:
the sorted distinct b-values of a multi-b series (standard element, enhanced functional
groups, the Siemens/GE/Philips private conventions), field strength and protocol."""

from __future__ import annotations

import random
import struct

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from tests.meta.corpus import encode

from jip.meta.diffusion import b_values
from jip.meta.extract import read_summary_bytes, series_document
from jip.meta.index_sqlite import SqliteIndex
from jip.meta.query import parse_query
from jip.samples import random_patient
from jip.samples_dwi import dwi_series


def _document(datasets: list[Dataset]) -> dict[str, object]:
    return series_document([read_summary_bytes(encode(ds)) for ds in datasets])


@pytest.fixture(scope="module")
def dwi() -> list[Dataset]:
    patient = random_patient(random.Random(2), 2)
    series = dwi_series(
        patient=patient, field_strength=1.5, protocol="dwi_v2", slices=2, rows=8, columns=8
    )
    random.Random(0).shuffle(series)  # instances arrive in any order
    return series


def test_a_multi_b_series_lists_its_sorted_distinct_b_values(dwi: list[Dataset]) -> None:
    doc = _document(dwi)
    assert doc["DiffusionBValues"] == [0.0, 500.0, 1000.0]
    assert doc["NumberOfInstances"] == 6


def test_the_protocol_fields_of_a_dwi_series_are_indexed(dwi: list[Dataset]) -> None:
    doc = _document(dwi)
    assert doc["MagneticFieldStrength"] == 1.5
    assert doc["ProtocolName"] == "dwi_v2"
    assert doc["MRAcquisitionType"] == "2D"
    assert doc["ManufacturerModelName"] == "MAGNETOM Aera"
    assert doc["SequenceName"] == "*ep_b0t"  # from the first instance (b = 0)


def test_a_cohort_query_selects_series_by_b_value_and_field_strength(dwi: list[Dataset]) -> None:
    t2 = _mr("1.2.3.2")
    index = SqliteIndex(":memory:")
    index.upsert([_document(dwi), series_document([read_summary_bytes(encode(t2))])])
    query = parse_query(
        {
            "bool": {
                "filter": [
                    {"range": {"DiffusionBValues": {"gte": 800}}},
                    {"term": {"MagneticFieldStrength": 1.5}},
                ]
            }
        }
    )
    hits = index.search(query, fields=["SeriesInstanceUID"]).hits
    assert [h["SeriesInstanceUID"] for h in hits] == [str(dwi[0].SeriesInstanceUID)]


def _mr(series_uid: str = "1.2.3.1") -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.SOPClassUID = pydicom.uid.MRImageStorage
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.SeriesInstanceUID = series_uid
    ds.Modality = "MR"
    return ds


def test_an_enhanced_mr_carries_its_b_values_per_frame() -> None:
    ds = _mr()
    frames = []
    for b in (1000.0, 0.0, 1000.0, 50.0):
        diffusion = Dataset()
        diffusion.DiffusionBValue = b
        frame = Dataset()
        frame.MRDiffusionSequence = Sequence([diffusion])
        frames.append(frame)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    assert _document([ds])["DiffusionBValues"] == [0.0, 50.0, 1000.0]


@pytest.mark.parametrize(
    ("group", "creator", "vr", "value", "expected"),
    [
        (0x0019, "SIEMENS MR HEADER", "IS", "800", 800.0),
        (0x0043, "GEMS_PARM_01", "IS", ["1000001000", "8", "0", "0"], 1000.0),
        (0x0043, "GEMS_PARM_01", "IS", ["500", "8", "0", "0"], 500.0),
        (0x2001, "Philips Imaging DD 001", "FL", 1500.0, 1500.0),
    ],
)
def test_vendors_private_b_values_are_read_by_their_creator(
    group: int, creator: str, vr: str, value: object, expected: float
) -> None:
    ds = _mr()
    offset = {0x0019: 0x0C, 0x0043: 0x39, 0x2001: 0x03}[group]
    ds.private_block(group, creator, create=True).add_new(offset, vr, value)
    assert _document([ds])["DiffusionBValues"] == [expected]


def test_a_philips_b_value_read_without_its_vr_is_a_float() -> None:
    ds = _mr()
    block = ds.private_block(0x2001, "Philips Imaging DD 001", create=True)
    block.add_new(0x03, "UN", struct.pack("<f", 1000.0))
    assert b_values(ds) == [1000.0]


def test_the_standard_element_wins_and_nonsense_is_left_out() -> None:
    ds = _mr()
    ds.DiffusionBValue = 600.0
    ds.private_block(0x0019, "SIEMENS MR HEADER", create=True).add_new(0x0C, "IS", "900")
    assert b_values(ds) == [600.0]
    other = _mr()
    other.private_block(0x0019, "OTHER CREATOR", create=True).add_new(0x0C, "IS", "900")
    other.private_block(0x0043, "GEMS_PARM_01", create=True).add_new(0x39, "IS", "-5")
    assert b_values(other) == []
    assert "DiffusionBValues" not in _document([other])
