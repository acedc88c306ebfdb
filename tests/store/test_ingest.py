"""bytes → storage → catalog, on every storage adapter and catalog backend.

Every test runs four times: file or S3 storage (``blob_storage``) × SQLite or PostgreSQL
(``catalog_url``).
"""

from __future__ import annotations

import hashlib
import io
import threading
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from jip.db import make_engine
from jip.errors import Invalid, Unavailable
from jip.migrations import upgrade
from jip.store.catalog.catalog import AddOutcome, Catalog, DuplicatePolicy
from jip.store.dicom_file import check_uid
from jip.store.ingest import Ingestor, IngestResult
from jip.store.storage.port import BlobStorage

UID_KEYWORDS = ("SOPInstanceUID", "SOPClassUID", "SeriesInstanceUID", "StudyInstanceUID")
# pydicom reads these (with at most a warning) but they are cut short: they must be refused.
CUT_SHORT = {
    "rtplan_truncated.dcm": "truncated",
    "MR_truncated.dcm": "truncated",
    "emri_small_jpeg_2k_lossless_too_short.dcm": "truncated",
}


@pytest.fixture
def catalog(catalog_url: str) -> Iterator[Catalog]:
    upgrade(catalog_url)
    engine = make_engine(catalog_url)
    yield Catalog(engine)
    engine.dispose()


@pytest.fixture
def make_ingestor(
    blob_storage: BlobStorage, catalog: Catalog
) -> Iterator[Callable[[DuplicatePolicy], Ingestor]]:
    made: list[Ingestor] = []

    def make(policy: DuplicatePolicy = DuplicatePolicy.KEEP_FIRST) -> Ingestor:
        made.append(Ingestor(blob_storage, catalog, policy))
        return made[-1]

    yield make
    for ingestor in made:
        ingestor.close()


@pytest.fixture
def ingestor(make_ingestor: Callable[[DuplicatePolicy], Ingestor]) -> Ingestor:
    return make_ingestor(DuplicatePolicy.KEEP_FIRST)


@pytest.fixture
def incoming(tmp_path: Path) -> Callable[[bytes], Path]:
    """Writes bytes to a spool file, as the listener does before ingesting it."""
    spool = tmp_path / "spool"
    spool.mkdir()

    def write(data: bytes) -> Path:
        path = spool / f"{uuid.uuid4().hex}.part"
        path.write_bytes(data)
        return path

    return write


def corpus_file(name: str) -> Path:
    path = get_testdata_file(name)
    assert path, f"{name} is not in pydicom's test data"
    return Path(str(path))


def _readable_with_uids(path: Path) -> bool:
    """Whether pydicom reads ``path`` as Part 10 and finds valid identifying UIDs."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = pydicom.dcmread(path, stop_before_pixels=True)
            check_uid(dataset.file_meta.get("TransferSyntaxUID"), "TransferSyntaxUID")
            for keyword in UID_KEYWORDS:
                check_uid(dataset.get(keyword), keyword)
    except Exception:
        return False
    return True


def _corpus() -> list[Path]:
    return sorted(
        (Path(name) for name in get_testdata_files() if Path(name).is_file()),
        key=lambda path: path.name,
    )


def part10(transfer_syntax: Any = ExplicitVRLittleEndian, **attributes: Any) -> bytes:
    """A small CT instance; ``attributes`` override elements (``None`` removes one)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.101"
    meta.TransferSyntaxUID = transfer_syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.101"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.102"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.103"
    ds.PatientID = "PAT-9"
    ds.Modality = "CT"
    ds.Rows, ds.Columns, ds.SamplesPerPixel = 8, 8, 1
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = bytes(range(128))
    for keyword, value in attributes.items():
        if value is None:
            del ds[keyword]
        else:
            setattr(ds, keyword, value)
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns on the invalid values some tests want
        pydicom.dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


def _inner_cuts(data: bytes) -> list[int]:
    """Cut points strictly inside elements (a cut between two top-level elements leaves a
    well-formed shorter dataset, which no reader can tell from a complete one)."""
    dataset = pydicom.dcmread(io.BytesIO(data), defer_size=0)
    cuts = {132 + 20}  # inside the file meta
    if dataset.file_meta.TransferSyntaxUID.is_deflated:
        # Offsets are in the inflated stream: cut the deflate stream itself instead (the
        # last bytes of image_dfl.dcm are padding after the stream's end).
        start = 132 + 12 + dataset.file_meta.FileMetaInformationGroupLength
        return sorted(cuts | {start + 3, (start + len(data)) // 2, len(data) - 9})
    cuts.add(len(data) - 1)
    for element in list(dataset._dict.values())[1 :: max(1, len(dataset._dict) // 6)]:
        value_at = getattr(element, "value_tell", None) or element.file_tell
        cuts |= {value_at - 3, value_at + 1}
    return sorted(cut for cut in cuts if 132 < cut < len(data))


def _snapshot(storage: BlobStorage, catalog: Catalog) -> tuple[dict[str, bytes], dict[str, int]]:
    return {key: storage.read_bytes(key) for key in list(storage.keys())}, catalog.counts()


# -- the corpus ----------------------------------------------------------------------------
@pytest.mark.slow
def test_every_readable_file_of_the_pydicom_corpus_is_stored_byte_identical(
    ingestor: Ingestor,
    blob_storage: BlobStorage,
    catalog: Catalog,
    incoming: Callable[[bytes], Path],
) -> None:
    stored: dict[str, bytes] = {}  # SOP Instance UID → the bytes that count
    syntaxes: set[str] = set()
    refused: dict[str, str] = {}
    for path in _corpus():
        data = path.read_bytes()
        expected = _readable_with_uids(path) and path.name not in CUT_SHORT
        try:
            result = ingestor.ingest_file(incoming(data))
        except Invalid as exc:
            refused[path.name] = str(exc)
            assert not expected, f"{path.name} refused: {exc}"
            continue
        assert expected, f"{path.name} should have been refused"
        # Stored exactly as received, whether it counts or is kept aside as a conflict.
        assert blob_storage.read_bytes(result.blob_key) == data, path.name
        syntaxes.add(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
        uid = result.sop_instance_uid
        if result.outcome is AddOutcome.STORED:
            assert uid not in stored, path.name
            stored[uid] = data
        elif result.outcome is AddOutcome.DUPLICATE:
            assert stored[uid] == data, path.name
        else:
            assert result.outcome is AddOutcome.CONFLICT and stored[uid] != data, path.name
        assert blob_storage.read_bytes(catalog.instance(uid).blob_key) == stored[uid]
    for name, problem in CUT_SHORT.items():
        assert problem in refused[name]
    assert len(stored) > 120
    assert len(syntaxes) >= 10, sorted(syntaxes)
    assert catalog.counts()["instances"] == len(stored)


def test_ingest_bytes_stores_them_byte_identical(
    ingestor: Ingestor, blob_storage: BlobStorage, catalog: Catalog
) -> None:
    names = ["CT_small.dcm", "MR_small_bigendian.dcm", "JPEG2000.dcm", "image_dfl.dcm"]
    for name in names:
        data = corpus_file(name).read_bytes()
        result = ingestor.ingest_bytes(data, calling_ae_title="STOW")
        assert result.outcome is AddOutcome.STORED
        assert blob_storage.read_bytes(result.blob_key) == data
        assert catalog.instance(result.sop_instance_uid).blob_key == result.blob_key
    assert catalog.counts()["instances"] == len(names)


def test_the_result_names_the_instance_and_its_parents(ingestor: Ingestor) -> None:
    dataset = pydicom.dcmread(corpus_file("CT_small.dcm"))
    result = ingestor.ingest_bytes(corpus_file("CT_small.dcm").read_bytes())
    assert result == IngestResult(
        sop_instance_uid=dataset.SOPInstanceUID,
        sop_class_uid=dataset.SOPClassUID,
        series_instance_uid=dataset.SeriesInstanceUID,
        study_instance_uid=dataset.StudyInstanceUID,
        outcome=AddOutcome.STORED,
        blob_key=result.blob_key,
    )
    assert result.blob_key.startswith(f"{dataset.StudyInstanceUID}/{dataset.SeriesInstanceUID}/")


# -- bad input -----------------------------------------------------------------------------
BAD_INPUTS = [
    pytest.param(b"", "only 0 bytes", id="empty"),
    pytest.param(b"GIF89a" + bytes(300), "not a DICOM Part 10 file", id="non-dicom"),
    pytest.param(part10(SOPInstanceUID=None), "SOPInstanceUID is missing", id="no-sop-uid"),
    pytest.param(
        part10(SOPInstanceUID="../etc"),
        "SOPInstanceUID '../etc' is not a valid",
        id="sop-uid-../etc",
    ),
    pytest.param(
        part10(StudyInstanceUID="../../etc/passwd"),
        "StudyInstanceUID '../../etc/passwd' is not a valid",
        id="study-uid-path",
    ),
    pytest.param(
        part10(SeriesInstanceUID="/abs/1.2"), "SeriesInstanceUID '/abs/1.2'", id="series-uid-abs"
    ),
]


@pytest.mark.parametrize(("data", "problem"), BAD_INPUTS)
def test_bad_input_is_invalid_stores_nothing_and_removes_the_spool_file(
    ingestor: Ingestor,
    blob_storage: BlobStorage,
    catalog: Catalog,
    incoming: Callable[[bytes], Path],
    data: bytes,
    problem: str,
) -> None:
    first = ingestor.ingest_bytes(corpus_file("CT_small.dcm").read_bytes())
    before = _snapshot(blob_storage, catalog)
    spool = incoming(data)
    with pytest.raises(Invalid) as caught:
        ingestor.ingest_file(spool)
    assert problem in str(caught.value)
    assert not spool.exists(), "the spool file must be removed"
    with pytest.raises(Invalid):
        ingestor.ingest_bytes(data)
    assert _snapshot(blob_storage, catalog) == before
    assert catalog.instance(first.sop_instance_uid).blob_key == first.blob_key


def test_files_cut_inside_an_element_are_invalid_and_change_nothing(
    ingestor: Ingestor,
    blob_storage: BlobStorage,
    catalog: Catalog,
    incoming: Callable[[bytes], Path],
) -> None:
    ingestor.ingest_bytes(corpus_file("CT_small.dcm").read_bytes())
    before = _snapshot(blob_storage, catalog)
    sources = {
        "implicit": part10(ImplicitVRLittleEndian),
        "explicit": corpus_file("MR_small.dcm").read_bytes(),
        "big-endian": corpus_file("MR_small_bigendian.dcm").read_bytes(),
        "encapsulated": corpus_file("JPEG2000.dcm").read_bytes(),
        "deflated": corpus_file("image_dfl.dcm").read_bytes(),
    }
    for name, data in sources.items():
        for cut in _inner_cuts(data):
            spool = incoming(data[:cut])
            with pytest.raises(Invalid) as caught:
                ingestor.ingest_file(spool)
            assert not spool.exists(), f"{name} cut at {cut}: spool file left behind"
            with pytest.raises(Invalid):
                ingestor.ingest_bytes(data[:cut])
            assert "truncated" in str(caught.value) or "deflated" in str(caught.value)
    assert _snapshot(blob_storage, catalog) == before


def test_a_cut_resend_of_a_stored_instance_leaves_it_untouched(
    ingestor: Ingestor,
    blob_storage: BlobStorage,
    catalog: Catalog,
    incoming: Callable[[bytes], Path],
) -> None:
    data = corpus_file("emri_small_jpeg_2k_lossless.dcm").read_bytes()
    first = ingestor.ingest_file(incoming(data))
    before = _snapshot(blob_storage, catalog)
    for cut in (len(data) - 1, len(data) - 100, len(data) // 2):
        with pytest.raises(Invalid, match="truncated"):
            ingestor.ingest_file(incoming(data[:cut]))
    assert _snapshot(blob_storage, catalog) == before
    assert blob_storage.read_bytes(catalog.instance(first.sop_instance_uid).blob_key) == data


# -- duplicates ----------------------------------------------------------------------------
def test_duplicate_instance_is_stored_once(
    ingestor: Ingestor,
    blob_storage: BlobStorage,
    catalog: Catalog,
    incoming: Callable[[bytes], Path],
) -> None:
    data = corpus_file("CT_small.dcm").read_bytes()
    first = ingestor.ingest_file(incoming(data))
    again = ingestor.ingest_file(incoming(data))
    by_bytes = ingestor.ingest_bytes(data)
    assert [first.outcome, again.outcome, by_bytes.outcome] == [
        AddOutcome.STORED,
        AddOutcome.DUPLICATE,
        AddOutcome.DUPLICATE,
    ]
    assert again.blob_key == first.blob_key
    assert list(blob_storage.keys()) == [first.blob_key]
    assert catalog.counts()["instances"] == 1
    assert catalog.counts()["conflicts"] == 0


def test_different_bytes_for_a_known_uid_keep_the_first_and_quarantine_the_second(
    ingestor: Ingestor,
    blob_storage: BlobStorage,
    catalog: Catalog,
    incoming: Callable[[bytes], Path],
) -> None:
    original = part10(PatientName="Doe^Jane")
    changed = part10(PatientName="Doe^John")
    first = ingestor.ingest_file(incoming(original))
    second = ingestor.ingest_file(incoming(changed))
    assert second.outcome is AddOutcome.CONFLICT
    assert second.blob_key != first.blob_key
    assert blob_storage.read_bytes(catalog.instance(first.sop_instance_uid).blob_key) == original
    assert blob_storage.read_bytes(second.blob_key) == changed  # kept for the admin
    [conflict] = catalog.conflicts()
    assert conflict["quarantine_key"] == second.blob_key
    assert conflict["resolution"] == "conflict"


def test_overwrite_policy_replaces_the_instance_and_keeps_the_old_bytes(
    make_ingestor: Callable[[DuplicatePolicy], Ingestor],
    blob_storage: BlobStorage,
    catalog: Catalog,
    incoming: Callable[[bytes], Path],
) -> None:
    ingestor = make_ingestor(DuplicatePolicy.OVERWRITE)
    original = part10(PatientName="Doe^Jane")
    changed = part10(PatientName="Doe^John")
    first = ingestor.ingest_file(incoming(original))
    second = ingestor.ingest_file(incoming(changed))
    assert second.outcome is AddOutcome.OVERWRITTEN
    assert blob_storage.read_bytes(catalog.instance(first.sop_instance_uid).blob_key) == changed
    [conflict] = catalog.conflicts()
    assert conflict["resolution"] == "overwritten"
    assert blob_storage.read_bytes(conflict["quarantine_key"]) == original  # type: ignore[arg-type]


def test_concurrent_senders_store_each_instance_once(
    ingestor: Ingestor,
    blob_storage: BlobStorage,
    catalog: Catalog,
    incoming: Callable[[bytes], Path],
) -> None:
    shared = [
        part10(SOPInstanceUID=f"1.2.826.0.1.3680043.8.498.101.{n}", InstanceNumber=n)
        for n in range(12)
    ]
    outcomes: list[AddOutcome] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def sender(index: int) -> None:
        start.wait()
        try:
            for data in shared[index:] + shared[:index]:
                outcomes.append(ingestor.ingest_file(incoming(data)).outcome)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=sender, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert outcomes.count(AddOutcome.STORED) == len(shared)
    assert outcomes.count(AddOutcome.DUPLICATE) == 3 * len(shared)
    assert len(list(blob_storage.keys())) == len(shared)
    assert catalog.counts()["instances"] == len(shared)


def test_a_large_instance_is_stored_whole_under_its_digest(
    ingestor: Ingestor, blob_storage: BlobStorage, incoming: Callable[[bytes], Path]
) -> None:
    # Past a megabyte the file is mapped, not read, and hashed a chunk at a time.
    pixels = bytes(range(256)) * (3 * 1024 * 1024 // 256 + 7)
    data = part10(Rows=1024, Columns=1536 + 7, PixelData=pixels)
    result = ingestor.ingest_file(incoming(data))
    assert result.outcome is AddOutcome.STORED
    assert hashlib.sha256(data).hexdigest()[:16] in result.blob_key
    assert blob_storage.read_bytes(result.blob_key) == data


def test_a_resent_instance_leaves_the_stored_bytes_as_they_were(
    ingestor: Ingestor, blob_storage: BlobStorage, incoming: Callable[[bytes], Path]
) -> None:
    data = corpus_file("CT_small.dcm").read_bytes()
    first = ingestor.ingest_file(incoming(data))
    spool = incoming(data)
    assert ingestor.ingest_file(spool).outcome is AddOutcome.DUPLICATE
    assert not spool.exists()
    assert list(blob_storage.keys()) == [first.blob_key]
    assert blob_storage.read_bytes(first.blob_key) == data


# -- odd but valid headers -----------------------------------------------------------------
def test_out_of_range_numbers_and_nul_padding_do_not_fail_the_catalog_row(
    ingestor: Ingestor, catalog: Catalog
) -> None:
    data = part10(InstanceNumber="99999999999", SeriesNumber="2147483648", PatientID="PAT\x00")
    result = ingestor.ingest_bytes(data)
    assert result.outcome is AddOutcome.STORED
    stored = catalog.instance(result.sop_instance_uid)
    assert stored.instance_number is None
    assert catalog.counts()["patients"] == 1


# -- failures downstream -------------------------------------------------------------------
def test_a_storage_failure_records_nothing(
    ingestor: Ingestor,
    blob_storage: BlobStorage,
    catalog: Catalog,
    incoming: Callable[[bytes], Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def unavailable(*_args: Any) -> None:
        raise Unavailable("object store down")

    monkeypatch.setattr(blob_storage, "move_in", unavailable)
    monkeypatch.setattr(blob_storage, "stage", unavailable)  # the C-STORE path's move_in
    monkeypatch.setattr(blob_storage, "put_bytes", unavailable)
    monkeypatch.setattr(blob_storage, "stage_bytes", unavailable)  # ingest_bytes' put_bytes
    data = corpus_file("CT_small.dcm").read_bytes()
    spool = incoming(data)
    with pytest.raises(Unavailable):
        ingestor.ingest_file(spool)
    with pytest.raises(Unavailable):
        ingestor.ingest_bytes(data)
    assert not spool.exists()
    assert catalog.counts()["instances"] == 0
    monkeypatch.undo()
    assert list(blob_storage.keys()) == []
    # The sender retries once the store is back.
    assert ingestor.ingest_file(incoming(data)).outcome is AddOutcome.STORED
