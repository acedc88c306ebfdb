"""Header extraction, from real DICOM files to series documents."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from tests.meta.corpus import ct_series_summaries, encode, sr_bytes

from jip.errors import Invalid
from jip.meta.extract import (
    instance_summary,
    patient_age_years,
    read_summary,
    read_summary_bytes,
    series_document,
)
from jip.meta.fields import FIELDS


def _path(name: str) -> Path:
    return Path(str(get_testdata_file(name)))


def test_ct_header_becomes_a_series_document() -> None:
    doc = series_document([read_summary(_path("CT_small.dcm"))])
    assert doc["SeriesInstanceUID"] == "1.3.6.1.4.1.5962.1.3.1.1.20040119072730.12322"
    assert doc["StudyInstanceUID"] == "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"
    assert (doc["Modality"], doc["Manufacturer"]) == ("CT", "GE MEDICAL SYSTEMS")
    assert doc["StudyDate"] == "2004-01-19"
    assert doc["SliceThickness"] == 5.0
    assert doc["PixelSpacing"] == [0.661468, 0.661468]
    assert (doc["Rows"], doc["Columns"]) == (128, 128)
    assert doc["ImageType"] == ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert doc["ContrastBolusAgent"] == "ISOVUE300/100"
    assert doc["Contrast"] is True
    assert doc["KVP"] == 120.0
    assert (doc["NumberOfInstances"], doc["NumberOfFrames"]) == (1, 1)
    assert doc["TotalBytes"] == _path("CT_small.dcm").stat().st_size


def test_mr_header_from_bytes() -> None:
    doc = series_document([read_summary_bytes(_path("MR_small.dcm").read_bytes())])
    assert doc["Modality"] == "MR"
    assert doc["ScanningSequence"] == ["SE"]
    assert (doc["EchoTime"], doc["RepetitionTime"]) == (240.0, 4000.0)
    assert doc["Contrast"] is False  # an image without ContrastBolusAgent


def test_only_catalogue_fields_are_kept_never_private_tags() -> None:
    dataset = pydicom.dcmread(_path("CT_small.dcm"))
    block = dataset.private_block(0x0029, "JIP TEST", create=True)
    block.add_new(0x01, "LO", "secret value")
    doc = series_document([read_summary_bytes(encode(dataset))])
    assert set(doc) <= set(FIELDS)
    assert "secret value" not in repr(doc)


def test_instances_fold_into_one_series() -> None:
    doc = series_document(ct_series_summaries(3))
    assert doc["NumberOfInstances"] == 3
    assert doc["NumberOfFrames"] == 3
    assert doc["TotalBytes"] == sum(s["FileSize"] for s in ct_series_summaries(3))
    # instance 2 adds a value: multi-valued fields take the union, in first-seen order
    assert doc["ImageType"] == ["ORIGINAL", "PRIMARY", "AXIAL", "CT_SOM5 SPI"]
    assert doc["PatientAgeYears"] == 58.0


def test_folding_is_independent_of_order_and_repeats() -> None:
    summaries = ct_series_summaries(3)
    assert series_document(summaries) == series_document([*reversed(summaries), summaries[0]])


def test_single_values_come_from_the_lowest_instance_number() -> None:
    first, second = (read_summary(_path("CT_small.dcm")) for _ in range(2))
    first |= {"SOPInstanceUID": "1.1", "InstanceNumber": 2, "SeriesDescription": "late"}
    second |= {"SOPInstanceUID": "1.2", "InstanceNumber": 1, "SeriesDescription": "early"}
    assert series_document([first, second])["SeriesDescription"] == "early"


def test_multiframe_instances_add_their_frames() -> None:
    doc = series_document([read_summary(_path("emri_small.dcm"))])
    assert (doc["NumberOfInstances"], doc["NumberOfFrames"]) == (1, 10)
    assert doc["MagneticFieldStrength"] == 3.0
    assert doc["BodyPartExamined"] == "HEAD"


def test_segmentation_refers_to_its_source_series() -> None:
    doc = series_document([read_summary(_path("liver.dcm"))])
    assert doc["Modality"] == "SEG"
    assert doc["ReferencedSeriesInstanceUID"] == [
        "1.2.392.200103.20080913.113635.1.2009.6.22.21.43.10.23430.1"
    ]
    assert doc["SegmentLabels"] == ["Liver"]
    assert "Contrast" not in doc  # means nothing for a segmentation
    assert doc["PatientAgeYears"] == 60.0


def test_structured_report_refers_to_its_evidence() -> None:
    doc = series_document([read_summary_bytes(sr_bytes("1.2.3.4.5"))])
    assert doc["Modality"] == "SR"
    assert doc["ReferencedSeriesInstanceUID"] == ["1.2.3.4.5"]
    assert doc["PatientAgeYears"] == 62.0  # from the birth date 1960-03-05 on 2023-03-04


def test_enhanced_multiframe_values_come_from_functional_groups() -> None:
    dataset = pydicom.dcmread(_path("CT_small.dcm"))
    for keyword in ("SliceThickness", "PixelSpacing"):
        delattr(dataset, keyword)
    measures = Dataset()
    measures.SliceThickness, measures.PixelSpacing = "1.5", ["0.75", "0.8"]
    shared = Dataset()
    shared.PixelMeasuresSequence = Sequence([measures])
    dataset.SharedFunctionalGroupsSequence = Sequence([shared])
    doc = series_document([read_summary_bytes(encode(dataset))])
    assert (doc["SliceThickness"], doc["PixelSpacing"]) == (1.5, [0.75, 0.8])


def _spoil(data: bytes, group: int, element: int, vr: bytes) -> bytes:
    """Overwrite an explicit-VR element's value with letters of the same length."""
    head = group.to_bytes(2, "little") + element.to_bytes(2, "little") + vr
    at = data.index(head) + len(head)
    length = int.from_bytes(data[at:at + 2], "little")
    return data[:at + 2] + b"x" * length + data[at + 2 + length:]


@pytest.mark.filterwarnings("ignore:Invalid value for VR")
def test_badly_encoded_optional_values_are_left_out() -> None:
    data = _path("CT_small.dcm").read_bytes()
    for group, element, vr in ((0x0018, 0x0050, b"DS"), (0x0008, 0x0020, b"DA"),
                               (0x0020, 0x0011, b"IS")):
        data = _spoil(data, group, element, vr)
    doc = series_document([read_summary_bytes(data)])
    assert {"SliceThickness", "StudyDate", "SeriesNumber"}.isdisjoint(doc)
    assert doc["Modality"] == "CT"


def test_a_bare_dataset_without_file_meta_is_read() -> None:
    dataset = pydicom.dcmread(_path("CT_small.dcm"))
    del dataset.file_meta
    dataset.preamble = None
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, dataset, implicit_vr=True, little_endian=True)
    summary = read_summary_bytes(buffer.getvalue())
    assert summary["Modality"] == "CT"


def test_pixel_data_is_never_decoded() -> None:
    data = _path("CT_small.dcm").read_bytes()
    summary = read_summary_bytes(data[:-1000])  # pixel data cut short
    assert summary["SeriesInstanceUID"]


def test_no_contrast_words_mean_no_contrast() -> None:
    dataset = pydicom.dcmread(_path("CT_small.dcm"))
    dataset.ContrastBolusAgent = "NONE"
    doc = series_document([read_summary_bytes(encode(dataset))])
    assert doc["Contrast"] is False


@pytest.mark.parametrize("data", [b"", b"not dicom at all" * 20])
def test_unreadable_headers_are_invalid(data: bytes) -> None:
    with pytest.raises(Invalid):
        read_summary_bytes(data)


def test_a_header_cut_before_the_series_uid_is_invalid() -> None:
    with pytest.raises(Invalid, match="SeriesInstanceUID"):
        read_summary_bytes(_path("CT_small.dcm").read_bytes()[:400])


def test_a_missing_file_is_invalid(tmp_path: Path) -> None:
    with pytest.raises(Invalid, match="cannot read"):
        read_summary(tmp_path / "missing.dcm")


def test_instances_of_two_series_do_not_fold() -> None:
    ct = read_summary(_path("CT_small.dcm"))
    mr = read_summary(_path("MR_small.dcm"))
    with pytest.raises(Invalid, match="more than one series"):
        series_document([ct, mr])
    with pytest.raises(Invalid, match="at least one"):
        series_document([])


def test_summary_of_a_dataset_without_sop_instance_uid_is_invalid() -> None:
    dataset = Dataset()
    dataset.SeriesInstanceUID = "1.2.3"
    with pytest.raises(Invalid, match="SOPInstanceUID"):
        instance_summary(dataset, 0)


@pytest.mark.parametrize(("age", "years"), [
    ("045Y", 45.0), ("006M", 0.5), ("010W", round(70 / 365.25, 3)), ("003D", 0.008),
])
def test_patient_age_string_becomes_years(age: str, years: float) -> None:
    assert patient_age_years(age, None, None) == years


@pytest.mark.parametrize(("born", "seen", "years"), [
    ("1960-03-05", "2023-03-04", 62.0),  # the day before the birthday
    ("1960-03-05", "2023-03-05", 63.0),
    ("2023-01-01", "2023-07-02", round(182 / 365.25, 3)),
    ("2023-01-01", "2022-07-02", None),  # seen before born: no age
])
def test_patient_age_from_birth_and_study_dates(born: str, seen: str, years: float) -> None:
    assert patient_age_years(None, born, seen) == years


def test_patient_age_string_wins_over_birth_date() -> None:
    assert patient_age_years("050Y", "1900-01-01", "2000-01-01") == 50.0
