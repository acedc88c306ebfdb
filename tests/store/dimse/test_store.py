"""C-ECHO and C-STORE against the running listener, with dcmtk and pynetdicom as peers."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pynetdicom import AE, build_context
from pynetdicom.dsutils import split_dataset
from tests.store.dimse.support import OPEN

from jip.config import Settings, StoreSettings
from jip.errors import Unavailable
from jip.runtime import build_runtime
from jip.samples import image_series, random_patient, write_datasets
from jip.store.dimse import scu
from jip.store.dimse.ae import configure_pynetdicom
from jip.store.dimse.listener import ListenerGroup

if TYPE_CHECKING:
    from tests.store.conftest import Listener


# pydicom test files, one per transfer syntax family (no two share a SOP Instance UID),
# with the storescu option that proposes their syntax (PS3.5 Annex A).
TRANSFER_SYNTAX_FILES = {
    "CT_small.dcm": "-xe",  # Explicit VR Little Endian
    "JPEG2000.dcm": "-xw",  # JPEG 2000
    "emri_small_jpeg_2k_lossless.dcm": "-xv",  # JPEG 2000 lossless, multi-frame Enhanced MR
    "SC_rgb_rle.dcm": "-xr",  # RLE Lossless
    "JPEG-LL.dcm": "-xs",  # JPEG Lossless SV1
    "JPEG-lossy.dcm": "-xx",  # JPEG Extended (12 bit)
    "SC_rgb_jpeg_dcmtk.dcm": "-xy",  # JPEG Baseline
    "MR_small_jpeg_ls_lossless.dcm": "-xt",  # JPEG-LS Lossless
    "image_dfl.dcm": "-xd",  # Deflated Explicit VR Little Endian
}
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


def pydicom_file(name: str) -> Path:
    path = get_testdata_file(name)
    assert path is not None, name
    return Path(path)


def dataset_bytes(path: Path) -> bytes:
    """The bytes after the File Meta Information: what travelled over DIMSE."""
    _, offset = split_dataset(path)
    return path.read_bytes()[offset:]


def same_dataset(stored: Path, sent: Path) -> bool:
    """Equal values, pixel data bytes included, in the same transfer syntax.

    dcmtk re-encodes what it sends: it drops Data Set Trailing Padding and writes
    encapsulated pixel data as OB where a file says OW.
    """
    a, b = pydicom.dcmread(stored), pydicom.dcmread(sent)
    for ds in (a, b):
        ds.pop(0xFFFCFFFC, None)
    tags = list(a.keys())
    same_values = tags == list(b.keys()) and all(a[t].value == b[t].value for t in tags)
    return same_values and a.file_meta.TransferSyntaxUID == b.file_meta.TransferSyntaxUID


def sop_uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def storescu(
    port: int, *files: Path, aet: str = "STORESCU", options: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "storescu",
            "-v",
            *options,
            "-aet",
            aet,
            "-aec",
            "JIP",
            "127.0.0.1",
            str(port),
            *map(str, files),
        ],
        capture_output=True,
        text=True,
        env=DCMTK_ENV,
        timeout=120,
    )


def ct_files(folder: Path, slices: int, seed: int = 0) -> list[Path]:
    patient = random_patient(random.Random(seed), seed)
    return write_datasets(image_series(patient=patient, slices=slices, rows=32, columns=32), folder)


@pytest.mark.dcmtk
def test_echoscu_gets_success(listener) -> None:
    result = subprocess.run(
        ["echoscu", "-aec", "JIP", "127.0.0.1", str(listener.port)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.dcmtk
def test_storescu_files_are_stored_as_sent_in_every_transfer_syntax(listener) -> None:
    for name, option in TRANSFER_SYNTAX_FILES.items():
        path = pydicom_file(name)
        result = storescu(listener.port, path, options=("-R", option))
        assert result.returncode == 0, result.stderr
        assert "Received Store Response (Success)" in result.stderr, name
        assert same_dataset(listener.stored_path(sop_uid(path)), path), name
    assert listener.instance_count() == len(TRANSFER_SYNTAX_FILES)


def test_files_sent_by_our_scu_are_stored_byte_for_byte(listener) -> None:
    files = [pydicom_file(name) for name in TRANSFER_SYNTAX_FILES]
    report = scu.send(listener.settings, listener.peer(), files)
    assert report.sent == len(files), report.failed
    for path in files:
        assert dataset_bytes(listener.stored_path(sop_uid(path))) == dataset_bytes(path), path.name


@pytest.mark.dcmtk
def test_duplicate_instance_is_success_and_stored_once(listener) -> None:
    path = pydicom_file("CT_small.dcm")
    assert storescu(listener.port, path).returncode == 0
    again = storescu(listener.port, path)
    assert again.returncode == 0, again.stderr
    assert "Received Store Response (Success)" in again.stderr
    assert listener.instance_count() == 1


@pytest.mark.dcmtk
def test_conflicting_instance_is_success_and_the_first_is_kept(listener) -> None:
    first, second = (
        pydicom_file("MR_small_jpeg_ls_lossless.dcm"),
        pydicom_file("MR_small_bigendian.dcm"),
    )
    assert sop_uid(first) == sop_uid(second)
    assert storescu(listener.port, first, options=("-R", "-xt")).returncode == 0
    result = storescu(listener.port, second)
    assert result.returncode == 0, result.stderr
    assert "Received Store Response (Success)" in result.stderr
    assert same_dataset(listener.stored_path(sop_uid(first)), first)
    assert listener.runtime.catalog.counts()["conflicts"] == 1


def _send_raw(port: int, path: Path) -> pydicom.Dataset:
    """C-STORE the file's dataset bytes unparsed (pynetdicom streams them as they are)."""
    configure_pynetdicom()  # STORE_SEND_CHUNKED_DATASET: send_c_store(path) never decodes
    meta, _ = split_dataset(path)
    ae = AE(ae_title="RAWSCU")
    assoc = ae.associate(
        "127.0.0.1",
        port,
        contexts=[build_context(meta.MediaStorageSOPClassUID, [meta.TransferSyntaxUID])],
        ae_title="JIP",
    )
    assert assoc.is_established
    try:
        return assoc.send_c_store(path)
    finally:
        assoc.release()


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_broken_dataset_fails_with_cannot_understand_and_nothing_is_stored(
    listener, tmp_path: Path, damage: str
) -> None:
    source = pydicom_file("CT_small.dcm")
    data = source.read_bytes()
    _, offset = split_dataset(source)
    broken = tmp_path / "broken.dcm"
    if damage == "truncated":
        broken.write_bytes(data[: len(data) - 1000])  # cut inside the pixel data
    else:
        broken.write_bytes(data[:offset] + os.urandom(2000))
    status = _send_raw(listener.port, broken)
    assert 0xC000 <= status.Status <= 0xCFFF
    assert status.ErrorComment
    assert listener.instance_count() == 0
    assert not list((listener.settings.data_dir / "blobs").rglob("*.dcm"))
    # The listener keeps serving.
    assert _send_raw(listener.port, source).Status == 0x0000
    assert listener.instance_count() == 1


def test_instance_without_series_uid_is_refused_naming_the_attribute(listener) -> None:
    status = _send_raw(listener.port, pydicom_file("JPEGLSNearLossless_08.dcm"))
    assert status.Status == 0xC000
    assert "SeriesInstanceUID" in status.ErrorComment
    assert listener.instance_count() == 0


@pytest.mark.dcmtk
def test_four_concurrent_storescu_senders_all_land(
    make_listener: Callable[..., Listener], tmp_path: Path
) -> None:
    listener = make_listener(processes=2, **OPEN)
    folders = [ct_files(tmp_path / f"series{i}", slices=15, seed=i) for i in range(4)]
    processes = [
        subprocess.Popen(
            ["storescu", "-aec", "JIP", "127.0.0.1", str(listener.port), *map(str, files)],
            env=DCMTK_ENV,
            stderr=subprocess.PIPE,
        )
        for files in folders
    ]
    for process in processes:
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
    assert listener.instance_count() == 60


@pytest.mark.dcmtk
def test_unknown_calling_ae_is_rejected_when_a_list_is_configured(make_listener) -> None:
    listener = make_listener(allowed_calling_aets=["MODALITY1"], **OPEN)

    def echo(aet: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["echoscu", "-aet", aet, "-aec", "JIP", "127.0.0.1", str(listener.port)],
            capture_output=True,
            text=True,
        )

    rejected = echo("STRANGER")
    assert rejected.returncode != 0
    assert "Rejected" in rejected.stderr
    assert echo("MODALITY1").returncode == 0


def test_scu_send_reports_every_file_and_stores_them(listener, tmp_path: Path) -> None:
    files = ct_files(tmp_path / "ct", slices=5)
    (tmp_path / "ct" / "notes.txt").write_text("not DICOM")
    seen: list[scu.SentFile] = []
    report = scu.send(listener.settings, listener.peer(), [tmp_path / "ct"], progress=seen.append)
    assert report.sent == 5
    assert [f.path.name for f in report.failed] == ["notes.txt"]
    assert len(seen) == 6
    assert listener.instance_count() == 5
    for path in files:
        assert dataset_bytes(listener.stored_path(sop_uid(path))) == dataset_bytes(path)


def test_scu_echo_answers_success(listener) -> None:
    assert scu.echo(listener.settings, listener.peer()).status == 0


def test_stop_lets_an_open_association_finish(make_listener, tmp_path: Path) -> None:
    listener = make_listener(network_timeout_s=20, **OPEN)
    files = ct_files(tmp_path / "ct", slices=2)
    configure_pynetdicom()
    ae = AE(ae_title="SLOWSCU")
    context = build_context(pydicom.dcmread(files[0]).SOPClassUID, ["1.2.840.10008.1.2.1"])
    assoc = ae.associate("127.0.0.1", listener.port, contexts=[context], ae_title="JIP")
    assert assoc.is_established
    assert assoc.send_c_store(files[0]).Status == 0
    stopper = threading.Thread(target=listener.group.stop)
    stopper.start()
    time.sleep(1.0)  # SIGTERM has arrived; the association is still open
    assert assoc.send_c_store(files[1]).Status == 0
    assoc.release()
    stopper.join(30)
    assert not stopper.is_alive()
    assert listener.instance_count() == 2
    assert not any((listener.settings.data_dir / "spool").rglob("*.dcm"))


def test_listener_reports_a_busy_port_clearly(tmp_path: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        store = StoreSettings(dicom_host="127.0.0.1", dicom_port=port)
        group = ListenerGroup(Settings(data_dir=tmp_path, store=store), build_runtime)
        with pytest.raises(Unavailable, match=str(port)):
            group.start()


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.mark.slow
def test_a_large_multiframe_instance_does_not_grow_listener_memory(
    listener, tmp_path: Path
) -> None:
    """The dataset is spooled to disk as it arrives (DESIGN.md: memory must not grow)."""
    frames, size = 160, 512  # 80 MiB of pixel data
    ds = image_series(patient=random_patient(random.Random(5), 5), slices=1, rows=8, columns=8)[0]
    ds.Rows = ds.Columns = size
    ds.NumberOfFrames = frames
    ds.PixelData = bytes(frames * size * size * 2)
    path = tmp_path / "multiframe.dcm"
    ds.save_as(path, enforce_file_format=True)
    del ds
    (pid,) = listener.group.describe()["pids"]
    scu.echo(listener.settings, listener.peer())  # warm up: imports, first association
    before = _peak_rss_mb(pid)
    report = scu.send(listener.settings, listener.peer(), [path])
    assert report.sent == 1, report.failed
    assert dataset_bytes(listener.stored_path(sop_uid(path))) == dataset_bytes(path)
    grown = _peak_rss_mb(pid) - before
    print(f"listener peak RSS grew by {grown:.1f} MiB")
    assert grown < 40  # vs 80 MiB of data
