"""Reading one received Part 10 file: truncation in every encoding, UIDs, header fields.

Every outcome of the one-pass reader (header, or the message refusing the file) is
compared with the reader it replaced (``dicom_reference``: a structure walk, then
pydicom), on pydicom's corpus, JIP's synthetic sites, cut and mutated files.
"""

from __future__ import annotations

import io
import random
import threading
import warnings
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.charset import decode_bytes, python_encoding
from pydicom.data import get_charset_files, get_testdata_file, get_testdata_files
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
)
from tests.store.dicom_reference import reference_header

from jip.errors import Invalid
from jip.samples import image_series, random_patient, synthetic_site
from jip.store.dicom_file import (
    InstanceHeader,
    check_uid,
    read_header,
    read_header_bytes,
    read_instance,
    read_instance_bytes,
)

SYNTAXES = [
    ImplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    DeflatedExplicitVRLittleEndian,
    JPEGBaseline8Bit,  # encapsulated pixel data
]
_LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}


def corpus_file(name: str) -> Path:
    path = get_testdata_file(name)
    assert path, f"{name} is not in pydicom's test data"
    return Path(str(path))


def part10(transfer_syntax: UID = ExplicitVRLittleEndian, **attributes: Any) -> bytes:
    """A small CT instance with nested undefined-length sequences, encoded as asked.

    ``attributes`` override top-level elements; ``None`` removes one.
    """
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    meta.TransferSyntaxUID = transfer_syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.2"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.3"
    ds.PatientID = "PAT-1"
    ds.PatientName = "Doe^Jane"
    ds.Modality = "CT"
    ds.InstanceNumber = 7
    code = Dataset()
    code.CodeValue = "T-D3000"
    code.CodingSchemeDesignator = "SRT"
    code.CodeMeaning = "Chest"
    reference = Dataset()
    reference.ReferencedSOPClassUID = CTImageStorage
    reference.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.8.498.9"
    reference.PurposeOfReferenceCodeSequence = Sequence([code])
    reference["PurposeOfReferenceCodeSequence"].is_undefined_length = True
    reference.is_undefined_length_sequence_item = True
    ds.ReferencedImageSequence = Sequence([reference, Dataset()])
    ds["ReferencedImageSequence"].is_undefined_length = True
    ds.AnatomicRegionSequence = Sequence([code])
    ds.Rows, ds.Columns, ds.SamplesPerPixel = 4, 4, 1
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    if transfer_syntax.is_encapsulated:
        ds.NumberOfFrames = 2
        ds.PixelData = encapsulate([b"\xff\xd8frame one\xff\xd9", b"\xff\xd8frame two!\xff\xd9"])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
    else:
        ds.PixelData = bytes(range(16))
    for keyword, value in attributes.items():
        if value is None:
            del ds[keyword]
        else:
            setattr(ds, keyword, value)
    out = io.BytesIO()
    pydicom.dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


def element_starts(data: bytes) -> set[int]:
    """Byte offsets where top-level dataset elements begin (read by pydicom)."""
    dataset = pydicom.dcmread(io.BytesIO(data), defer_size=0)
    syntax = dataset.file_meta.TransferSyntaxUID
    starts = set()
    for element in dataset._dict.values():
        value_at = getattr(element, "value_tell", None) or element.file_tell
        header = 8 if syntax.is_implicit_VR or element.VR not in _LONG_VRS else 12
        starts.add(value_at - header)
    return starts


def outcome(read: Any, data: Any) -> InstanceHeader | str:
    """The header ``read`` returns, or the message of the Invalid it raises."""
    try:
        header = read(data)
    except Invalid as exc:
        return f"Invalid: {exc}"
    return header if isinstance(header, InstanceHeader) else header[0]


def refused(data: bytes) -> str | None:
    """The Invalid message for ``data`` (None: accepted), the same from every reader."""
    new = outcome(read_header_bytes, data)
    assert new == outcome(reference_header, data)
    assert new == outcome(read_instance_bytes, data)
    return new[len("Invalid: ") :] if isinstance(new, str) else None


# -- truncation ----------------------------------------------------------------------------
@pytest.mark.parametrize("syntax", SYNTAXES, ids=lambda s: s.name)
def test_the_whole_file_is_read(syntax: UID) -> None:
    header, dataset = read_instance_bytes(part10(syntax))
    assert header.transfer_syntax_uid == syntax
    assert header.sop_instance_uid == "1.2.826.0.1.3680043.8.498.1"
    assert header.instance_number == 7
    assert len(dataset.ReferencedImageSequence) == 2


@pytest.mark.parametrize("syntax", SYNTAXES, ids=lambda s: s.name)
def test_every_cut_inside_an_element_is_refused(syntax: UID) -> None:
    data = part10(syntax)
    # A cut exactly between two top-level elements leaves a shorter, well-formed dataset
    # (Part 10 has no overall length); every other cut must be caught. A deflated
    # dataset is one stream, so every cut counts there, save pydicom's even-length pad.
    boundaries = set() if syntax.is_deflated else element_starts(data)
    end = len(data) - 1 if syntax.is_deflated and data.endswith(b"\x00") else len(data)
    accepted = [cut for cut in range(end) if cut not in boundaries and not refused(data[:cut])]
    assert accepted == []


@pytest.mark.parametrize("syntax", SYNTAXES, ids=lambda s: s.name)
def test_a_cut_inside_a_nested_sequence_names_the_problem(syntax: UID) -> None:
    data = part10(syntax)
    code = data.find(b"T-D3000") if not syntax.is_deflated else len(data) // 2
    message = refused(data[: code + 3])
    assert message is not None
    assert "truncated" in message or "deflated" in message


@pytest.mark.parametrize(
    "name",
    [
        "MR_small_implicit.dcm",
        "CT_small.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_RLE.dcm",
        "JPEG2000.dcm",
        "JPEG-lossy.dcm",
        "SC_rgb_jpeg_dcmtk.dcm",
        "emri_small_jpeg_2k_lossless.dcm",
        "liver.dcm",
        "rtplan.dcm",
        "image_dfl.dcm",
    ],
)
def test_cut_files_from_the_pydicom_corpus_are_refused(name: str) -> None:
    data = corpus_file(name).read_bytes()
    read_instance_bytes(data)
    deflated = pydicom.dcmread(io.BytesIO(data)).file_meta.TransferSyntaxUID.is_deflated
    boundaries = set() if deflated else element_starts(data)
    # image_dfl.dcm carries 8 bytes after its deflate stream; cutting those loses nothing.
    end = len(data) - 8 if deflated else len(data)
    cuts = {*range(0, min(end, 2500), 3), *range(2500, end, max(1, end // 60))}
    cuts |= {end - n for n in (1, 2, 3, 4, 7, 8, 9)}
    accepted = sorted(
        cut for cut in cuts - boundaries if 0 <= cut < end and not refused(data[:cut])
    )
    assert accepted == []


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("rtplan_truncated.dcm", "truncated"),
        ("MR_truncated.dcm", "truncated"),
        ("emri_small_jpeg_2k_lossless_too_short.dcm", "truncated"),
    ],
)
def test_truncated_files_of_the_pydicom_corpus_are_refused(name: str, problem: str) -> None:
    message = refused(corpus_file(name).read_bytes())
    assert message is not None and problem in message


def test_a_dataset_whose_vr_encoding_contradicts_its_syntax_is_read_as_pydicom_does() -> None:
    # SC_rgb_jpeg.dcm says JPEG (explicit VR) but is encoded implicit VR; pydicom reads it.
    header, _ = read_instance(corpus_file("SC_rgb_jpeg.dcm"))
    assert header.transfer_syntax_uid == JPEGBaseline8Bit


def test_reading_on_many_threads_is_consistent_and_leaves_warning_filters_alone() -> None:
    whole = part10(ExplicitVRLittleEndian)
    cut = whole[: whole.find(b"T-D3000") + 3]
    filters_before = list(warnings.filters)
    results: list[tuple[bool, str | None]] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(40):
            outcome = [(True, refused(whole)), (False, refused(cut))]
            with lock:
                results.extend(outcome)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all((message is None) == good for good, message in results)
    assert warnings.filters == filters_before


# -- not DICOM -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "only 0 bytes"),
        (b"\x89PNG\r\n\x1a\n" + bytes(200), "no 'DICM' prefix"),
        (b"hello, this is plain text\n" * 20, "not a DICOM"),
        (bytes(128) + b"DICM" + b"\xff" * 64, "no File Meta Information"),
        (bytes(128) + b"DICM", "no File Meta Information"),
    ],
    ids=["empty", "png", "text", "garbage-after-DICM", "preamble-only"],
)
def test_non_dicom_bytes_are_refused(data: bytes, problem: str) -> None:
    message = refused(data)
    assert message is not None
    assert problem in message


def test_file_meta_without_dataset_is_refused() -> None:
    data = part10()
    dataset_start = min(element_starts(data))
    assert "no dataset" in (refused(data[:dataset_start]) or "")


# -- UIDs ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "uid",
    [
        "0",
        "1.2",
        "1.0.3",
        "1.2.840.10008.1.2.4.50",
        "2.25.329800735698586629295641978511506172918",
        "1." + "2" * 62,
    ],
)
def test_valid_uids_pass(uid: str) -> None:
    assert check_uid(uid, "SOPInstanceUID") == uid


def test_uid_padding_is_removed() -> None:
    assert check_uid("1.2.3\x00", "SOPInstanceUID") == "1.2.3"
    assert check_uid(" 1.2.3 ", "SOPInstanceUID") == "1.2.3"


@pytest.mark.parametrize(
    "uid",
    [
        "../etc",
        "../../etc/passwd",
        "1.2/../../x",
        "/1.2",
        "1.2.3/4",
        "1..2",
        ".1.2",
        "1.2.",
        "01.2",
        "1.02",
        "1.2a",
        "1.2 3",
        "1.2\\3",
        "-1.2",
        "1." + "2" * 63,
    ],
)
def test_invalid_uids_are_refused_by_name(uid: str) -> None:
    with pytest.raises(Invalid, match=r"SeriesInstanceUID .* is not a valid DICOM UID"):
        check_uid(uid, "SeriesInstanceUID")


@pytest.mark.parametrize("value", [None, "", "   ", "\x00"])
def test_missing_uid_is_refused_by_name(value: object) -> None:
    with pytest.raises(Invalid, match="StudyInstanceUID is missing"):
        check_uid(value, "StudyInstanceUID")


@pytest.mark.parametrize(
    "keyword", ["SOPInstanceUID", "SOPClassUID", "SeriesInstanceUID", "StudyInstanceUID"]
)
def test_a_file_without_a_required_uid_is_refused(keyword: str) -> None:
    message = refused(part10(**{keyword: None}))
    assert message == f"{keyword} is missing"


@pytest.mark.parametrize("uid", ["../etc", "1.2.3/../../x", "1.2.abc"])
def test_a_file_with_a_path_like_uid_is_refused(uid: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the invalid UI value
        data = part10(SOPInstanceUID=uid)
    message = refused(data)
    assert message is not None and "SOPInstanceUID" in message and "not a valid" in message


# -- header fields -------------------------------------------------------------------------
def test_header_holds_the_catalogued_attributes() -> None:
    header, _ = read_instance(corpus_file("CT_small.dcm"))
    dataset = pydicom.dcmread(corpus_file("CT_small.dcm"))
    assert header.sop_instance_uid == dataset.SOPInstanceUID
    assert header.series_instance_uid == dataset.SeriesInstanceUID
    assert header.study_instance_uid == dataset.StudyInstanceUID
    assert header.patient_id == dataset.PatientID
    assert header.modality == "CT"
    assert (header.rows, header.columns, header.number_of_frames) == (128, 128, 1)


def test_nul_padding_is_removed_from_text_fields() -> None:
    header, _ = read_instance_bytes(part10(PatientID="PAT-1\x00", StudyDescription="Chest\x00"))
    assert header.patient_id == "PAT-1"
    assert header.study_description == "Chest"


def test_integers_outside_the_is_range_are_dropped() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = part10(InstanceNumber="99999999999", SeriesNumber="-5")
    header, _ = read_instance_bytes(data)
    assert header.instance_number is None
    assert header.series_number == -5


# -- the same header as pydicom reads ----------------------------------------------------
def _corpus() -> list[Path]:
    names = {*get_testdata_files(), *get_charset_files()}  # pydicom's, pydicom-data's
    return sorted((Path(name) for name in names if Path(name).is_file()), key=str)


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom on odd values
@pytest.mark.parametrize("path", _corpus(), ids=lambda path: path.name)
def test_every_corpus_file_reads_as_pydicom_reads_it(path: Path) -> None:
    data = path.read_bytes()
    expected = outcome(reference_header, data)
    assert outcome(read_header_bytes, data) == expected
    assert outcome(read_header, path) == expected


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom on odd values
def test_synthetic_sites_read_as_pydicom_reads_them(tmp_path: Path) -> None:
    datasets = synthetic_site(patients=3, studies_per_patient=2, series_per_study=2, slices=2)
    for syntax in (ImplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian):
        for ds in image_series(patient=random_patient(random.Random(7), 1), rows=8, columns=8):
            ds.file_meta.TransferSyntaxUID = syntax
            datasets.append(ds)
    for index, ds in enumerate(datasets):
        path = tmp_path / f"{index}.dcm"
        ds.save_as(path, enforce_file_format=True)
        expected = outcome(reference_header, path.read_bytes())
        assert isinstance(expected, InstanceHeader)
        assert outcome(read_header, path) == expected


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom on odd values
@pytest.mark.parametrize("syntax", SYNTAXES, ids=lambda s: s.name)
@pytest.mark.parametrize(
    "attributes",
    [
        # text: padding, NULs, several values, empty values
        {"PatientID": " PAT 1 \x00", "StudyDescription": "A \\B\x00 \\ C ", "Modality": "CT\\MR "},
        {"PatientName": "Doe^Jane=ドウ^ジェーン", "SpecificCharacterSet": ["", "ISO 2022 IR 87"]},
        {"PatientName": "Doe^Jane\\Roe^Rick ", "ReferringPhysicianName": "=="},
        {"AccessionNumber": "", "PatientName": None, "BodyPartExamined": "\\"},
        # other character sets
        {
            "SpecificCharacterSet": "ISO_IR 100",
            "PatientName": "Müller^Jürgen",
            "StudyDescription": "Thorax ä",
        },
        {
            "SpecificCharacterSet": "ISO_IR 192",
            "PatientName": "Ωμέγα^Δέλτα",
            "InstitutionName": "Klinikum Köln",
        },
        {"SpecificCharacterSet": "ISO_IR 144", "PatientName": "Люкceмбypг^Иван"},
        {"SpecificCharacterSet": "GB18030", "SeriesDescription": "胸部 CT"},
        {"SpecificCharacterSet": "ISO_IR 100", "PatientID": "ID\x1b(B7"},
        # numbers: signs, spaces, non-integers, several values, out of range
        {"InstanceNumber": "+5", "SeriesNumber": " 12 "},
        {"InstanceNumber": "1.0", "SeriesNumber": "1.5"},
        {"InstanceNumber": "7\\8", "SeriesNumber": "-0"},
        {"InstanceNumber": "-2147483648", "SeriesNumber": "2147483648"},
        {"NumberOfFrames": "0", "Rows": None},
        {"NumberOfFrames": "", "Columns": None},
        # UIDs: padding, several values
        {"StudyInstanceUID": "1.2.3\\1.2.4"},
        {"SeriesInstanceUID": " 1.2.3 "},
    ],
    ids=lambda a: ",".join(a),
)
def test_odd_values_read_as_pydicom_reads_them(syntax: UID, attributes: dict[str, Any]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = part10(syntax, **attributes)
    refused(data)


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom on odd values
def test_values_pydicom_would_not_write_read_as_pydicom_reads_them() -> None:
    data = part10(ExplicitVRLittleEndian, Rows=4, InstanceNumber=7, SeriesNumber=12)
    for before, after in [
        (b"(\x00\x10\x00US", b"(\x00\x10\x00SS"),  # a VR other than the dictionary's
        (b"\x13\x00IS", b"\x13\x00LO"),
        (b"\x11\x00IS\x02\x0012", b"\x11\x00IS\x02\x00ab"),  # not a number
        (b"(\x00\x10\x00US\x02\x00\x04\x00", b"(\x00\x10\x00US\x01\x00\x04\x00"),  # cut US
    ]:
        assert data.count(before) == 1
        refused(data.replace(before, after))


def test_plain_ascii_decodes_alike_in_every_character_set() -> None:
    # read_header decodes printable ASCII itself, whatever Specific Character Set says.
    plain = bytes(range(0x20, 0x7F)) + b"\x00"
    for encoding in sorted(set(python_encoding.values())):
        assert decode_bytes(plain, [encoding], set()) == plain.decode("ascii"), encoding


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom on odd values
def test_mutated_files_read_as_pydicom_reads_them() -> None:
    rng = random.Random(20251125)
    sources = [part10(syntax) for syntax in SYNTAXES]
    for name in ("liver.dcm", "rtplan.dcm", "SC_rgb_jpeg.dcm"):
        sources.append(corpus_file(name).read_bytes())
    for data in sources:
        for _ in range(150):
            mutated = bytearray(data)
            for _ in range(rng.choice((1, 1, 2))):
                at = rng.randrange(128, min(len(mutated), 4000))
                kind = rng.random()
                if kind < 0.6:
                    mutated[at] = rng.choice((rng.randrange(256), *b" \x00\\=\xff\xfe\xe0\xdd"))
                elif kind < 0.8:
                    del mutated[at : at + rng.randrange(1, 4)]
                else:
                    mutated[at:at] = bytes([rng.randrange(256)])
            refused(bytes(mutated))


def test_a_large_file_is_read_through_a_mapping(tmp_path: Path) -> None:
    data = part10(ExplicitVRLittleEndian, Rows=1024, Columns=1024, PixelData=bytes(1024 * 1024 * 2))
    path = tmp_path / "large.dcm"
    path.write_bytes(data)
    assert outcome(read_header, path) == outcome(reference_header, data)


def test_header_json_returns_an_invalid_value_as_stored_and_logs_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    from jip.store.dicom_file import header_json

    ds = Dataset()
    ds.PatientID = "P1"
    ds[0x00200012] = RawDataElement(Tag(0x00200012), "IS", 2, b"1A", 0, False, True)
    ds[0x00280006] = RawDataElement(Tag(0x00280006), "US", 3, b"\1\2\3", 0, False, True)
    with caplog.at_level("WARNING", logger="jip.store.dicom_json"):
        result = header_json(ds)
    assert result["00200012"] == {"vr": "IS", "Value": ["1A"]}
    assert "00280006" not in result  # a US three bytes long cannot be read: left out
    assert result["00100020"]["Value"] == ["P1"]
    logged = {getattr(r, "tag", None) for r in caplog.records if r.name == "jip.store.dicom_json"}
    assert logged == {"00200012", "00280006"}
