"""The storage fast path (jip.store.dimse.fast_path) against pynetdicom peers and raw PDUs.

pynetdicom as the requestor checks that what it negotiates and sends is stored as sent;
hand-made PDUs check the cases no well-behaved peer produces: fragments split oddly,
data on a context that was not accepted, a connection cut in the middle of a data set.
"""

from __future__ import annotations

import errno
import io
import socket
import struct
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_context
from pynetdicom.dsutils import encode, split_dataset
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification

from jip.config import AuthSettings, Settings, StoreSettings
from jip.runtime import build_runtime
from jip.store.dimse import pdu as dimse_pdu
from jip.store.dimse import scu
from jip.store.dimse import session as store_session
from jip.store.dimse.ae import build_ae, start_server
from jip.store.dimse.contexts import VERIFICATION
from jip.store.storage import file as file_storage

CT_SMALL = Path(str(get_testdata_file("CT_small.dcm")))
STUDY_ROOT_FIND = scu.QueryRetrieveModel.STUDY_ROOT_FIND.value


def stored_count(settings: Settings) -> int:
    runtime = build_runtime(settings, migrate=False)
    try:
        return runtime.catalog.counts()["instances"]
    finally:
        runtime.close()


def dataset_bytes(path: Path) -> bytes:
    _, offset = split_dataset(path)
    return path.read_bytes()[offset:]


# -- raw PDUs ---------------------------------------------------------------------------
def associate_raw(port: int, abstract: str, syntax: str = ExplicitVRLittleEndian) -> socket.socket:
    """A-ASSOCIATE-RQ with one context (id 1); returns the socket once accepted."""
    request = A_ASSOCIATE()
    request.application_context_name = "1.2.840.10008.3.1.1.1"
    request.calling_ae_title = "RAW"
    request.called_ae_title = "JIP"
    context = build_context(abstract, [syntax])
    context.context_id = 1
    request.presentation_context_definition_list = [context]
    maximum = MaximumLengthNotification()
    maximum.maximum_length_received = 16384
    request.user_information = [maximum]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(request)
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(pdu.encode())
    pdu_type, _ = dimse_pdu.read_pdu(sock, 1 << 20)
    assert pdu_type == 0x02, "A-ASSOCIATE-AC expected"
    return sock


def command_bytes(field: int, sop_instance: str = "", message_id: int = 7) -> bytes:
    ds = Dataset()
    ds.AffectedSOPClassUID = CTImageStorage if field == 1 else VERIFICATION
    ds.CommandField = field
    ds.MessageID = message_id
    if field == 1:
        ds.Priority = 0
    ds.CommandDataSetType = 0x0000 if field == 1 else 0x0101
    if sop_instance:
        ds.AffectedSOPInstanceUID = sop_instance
    body = encode(ds, True, True)
    assert body is not None
    ds.CommandGroupLength = len(body)
    encoded = encode(ds, True, True)
    assert encoded is not None
    return encoded


def pdv(context_id: int, control: int, data: bytes) -> bytes:
    return struct.pack(">LBB", len(data) + 2, context_id, control) + data


def p_data(*pdvs: bytes) -> bytes:
    body = b"".join(pdvs)
    return struct.pack(">BBL", 0x04, 0, len(body)) + body


def response(sock: socket.socket) -> dict[int, int | str]:
    pdu_type, pdu = dimse_pdu.read_pdu(sock, 1 << 20)
    assert pdu_type == 0x04, f"P-DATA-TF expected, got PDU type {pdu_type:#x}"
    length, _, control = struct.unpack_from(">LBB", pdu, 6)
    assert control == 0x03  # last fragment of a command
    return dimse_pdu.decode_command(bytes(pdu[12 : 6 + 4 + length]))


def expect_abort(sock: socket.socket) -> None:
    pdu_type, _ = dimse_pdu.read_pdu(sock, 1 << 20)
    assert pdu_type == 0x07, f"A-ABORT expected, got PDU type {pdu_type:#x}"


def echo_works(port: int) -> bool:
    ae = AE(ae_title="CHECK")
    assoc = ae.associate("127.0.0.1", port, contexts=[build_context(VERIFICATION)], ae_title="JIP")
    try:
        return bool(assoc.is_established and assoc.send_c_echo().Status == 0)
    finally:
        assoc.release()


def ct_storage_association(port: int) -> Any:
    """An association from SENDER proposing CT Image Storage, explicit VR only."""
    context = build_context(CTImageStorage, [ExplicitVRLittleEndian])
    return AE(ae_title="SENDER").associate("127.0.0.1", port, contexts=[context], ae_title="JIP")


# -- through pynetdicom --------------------------------------------------------------
def test_storage_takes_the_fast_path_and_queries_go_to_pynetdicom(server) -> None:
    _, port, running = server
    ae = AE(ae_title="SENDER")
    assoc = ae.associate(
        "127.0.0.1", port, contexts=[build_context(CTImageStorage)], ae_title="JIP"
    )
    try:
        assert assoc.is_established
        assert len(running.fast_path.sessions) == 1
        assert running.active_associations == []
    finally:
        assoc.release()
    assoc = ae.associate(
        "127.0.0.1", port, contexts=[build_context(STUDY_ROOT_FIND)], ae_title="JIP"
    )
    try:
        assert assoc.is_established
        assert running.fast_path.sessions == []
        assert len(running.active_associations) == 1
    finally:
        assoc.release()


def test_storage_classes_outside_the_image_storage_arc_take_the_fast_path(server) -> None:
    """PS3.4 storage classes such as RT Beams Delivery Instruction (1.2.840.10008.5.1.4.34.7)."""
    _, port, running = server
    ae = AE(ae_title="SENDER")
    context = build_context("1.2.840.10008.5.1.4.34.7", [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", port, contexts=[context], ae_title="JIP")
    try:
        assert assoc.is_established
        assert len(running.fast_path.sessions) == 1
    finally:
        assoc.release()


def test_a_stored_instance_is_catalogued_with_its_bytes_as_sent(server) -> None:
    settings, port, _ = server
    assoc = ct_storage_association(port)
    try:
        status = assoc.send_c_store(CT_SMALL)
    finally:
        assoc.release()
    assert status.Status == 0x0000
    runtime = build_runtime(settings, migrate=False)
    try:
        sop = str(pydicom.dcmread(CT_SMALL, stop_before_pixels=True).SOPInstanceUID)
        stored = runtime.catalog.instance(sop)
        data = runtime.storage.read_bytes(stored.blob_key)
    finally:
        runtime.close()
    (tmp := settings.data_dir / "check.dcm").write_bytes(data)
    assert dataset_bytes(tmp) == dataset_bytes(CT_SMALL)
    meta = pydicom.dcmread(tmp, stop_before_pixels=True).file_meta
    assert meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert meta.SourceApplicationEntityTitle == "SENDER"
    assert meta.MediaStorageSOPInstanceUID == sop


def test_storage_and_query_on_one_association_are_served_by_pynetdicom(server) -> None:
    """The request PDU the fast path read is replayed to pynetdicom intact."""
    _, port, running = server
    ae = AE(ae_title="BOTH")
    contexts = [
        build_context(CTImageStorage, [ExplicitVRLittleEndian]),
        build_context(STUDY_ROOT_FIND),
    ]
    assoc = ae.associate("127.0.0.1", port, contexts=contexts, ae_title="JIP")
    try:
        assert assoc.is_established
        assert len(running.active_associations) == 1
        assert assoc.send_c_store(CT_SMALL).Status == 0x0000
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = ""
        answers = list(assoc.send_c_find(query, STUDY_ROOT_FIND))
    finally:
        assoc.release()
    matches = [ds for status, ds in answers if status and status.Status in (0xFF00, 0xFF01)]
    study = str(pydicom.dcmread(CT_SMALL, stop_before_pixels=True).StudyInstanceUID)
    assert [str(ds.StudyInstanceUID) for ds in matches] == [study]


def test_the_association_limit_rejects_the_next_sender(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        store=StoreSettings(dicom_host="127.0.0.1", dicom_port=0, max_associations=1),
        auth=AuthSettings(enabled=False),
    )
    runtime = build_runtime(settings)
    running = start_server(build_ae(settings.store), runtime, "127.0.0.1", 0)
    port = running.server_address[1]
    try:
        ae = AE(ae_title="SENDER")
        contexts = [build_context(CTImageStorage)]
        first = ae.associate("127.0.0.1", port, contexts=contexts, ae_title="JIP")
        second = ae.associate("127.0.0.1", port, contexts=contexts, ae_title="JIP")
        assert first.is_established
        assert second.is_rejected
        first.release()
    finally:
        running.shutdown()
        runtime.close()


# -- hand-made PDUs -------------------------------------------------------------------------
@pytest.fixture
def raw(server) -> Iterator[tuple[Settings, int, socket.socket]]:
    settings, port, _ = server
    sock = associate_raw(port, CTImageStorage)
    try:
        yield settings, port, sock
    finally:
        sock.close()


def test_fragments_split_across_pdvs_and_pdus_are_reassembled(raw) -> None:
    settings, _, sock = raw
    sop = str(pydicom.dcmread(CT_SMALL, stop_before_pixels=True).SOPInstanceUID)
    command = command_bytes(1, sop)
    data = dataset_bytes(CT_SMALL)
    half, third = len(command) // 2, len(data) // 3
    # Command in two PDVs of one PDU; the data set in three PDVs over two PDUs.
    sock.sendall(p_data(pdv(1, 0x01, command[:half]), pdv(1, 0x03, command[half:])))
    sock.sendall(p_data(pdv(1, 0x00, data[:third]), pdv(1, 0x00, data[third : 2 * third])))
    sock.sendall(p_data(pdv(1, 0x02, data[2 * third :])))
    answer = response(sock)
    assert answer[0x00000100] == 0x8001  # C-STORE-RSP
    assert answer[0x00000900] == 0x0000
    assert answer[0x00001000] == sop
    sock.sendall(bytes.fromhex("05 00 00000004 00000000"))  # A-RELEASE-RQ
    assert dimse_pdu.read_pdu(sock, 64)[0] == 0x06  # A-RELEASE-RP
    assert stored_count(settings) == 1


def test_echo_on_the_fast_path_answers_success(server) -> None:
    _, port, _ = server
    sock = associate_raw(port, VERIFICATION, ImplicitVRLittleEndian)
    try:
        sock.sendall(p_data(pdv(1, 0x03, command_bytes(0x0030, message_id=3))))
        answer = response(sock)
    finally:
        sock.close()
    assert answer[0x00000100] == 0x8030
    assert answer[0x00000900] == 0x0000


def test_a_truncated_data_set_fails_naming_the_problem_and_stores_nothing(raw) -> None:
    settings, _, sock = raw
    sop = str(pydicom.dcmread(CT_SMALL, stop_before_pixels=True).SOPInstanceUID)
    data = dataset_bytes(CT_SMALL)
    sock.sendall(p_data(pdv(1, 0x03, command_bytes(1, sop))))
    sock.sendall(p_data(pdv(1, 0x02, data[: len(data) - 100])))
    pdu_type, pdu = dimse_pdu.read_pdu(sock, 1 << 20)
    assert pdu_type == 0x04
    command = bytes(pdu[12:])
    assert 0xC000 <= dimse_pdu.decode_command(command)[0x00000900] <= 0xCFFF
    assert b"truncated" in command  # the Error Comment names the problem
    assert stored_count(settings) == 0


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(lambda c, d: p_data(pdv(5, 0x03, c)), id="context-not-accepted"),
        pytest.param(lambda c, d: p_data(pdv(1, 0x02, d)), id="data-before-command"),
        pytest.param(lambda c, d: struct.pack(">BBL", 0x09, 0, 2) + b"\0\0", id="unknown-pdu"),
        pytest.param(lambda c, d: p_data(struct.pack(">LBB", 99, 1, 3)), id="pdv-overruns-pdu"),
    ],
)
def test_protocol_violations_abort_and_the_listener_keeps_serving(raw, bad) -> None:
    settings, port, sock = raw
    sop = str(pydicom.dcmread(CT_SMALL, stop_before_pixels=True).SOPInstanceUID)
    sock.sendall(bad(command_bytes(1, sop), dataset_bytes(CT_SMALL)))
    expect_abort(sock)
    assert sock.recv(1) == b""  # and the connection is closed
    assert stored_count(settings) == 0
    assert echo_works(port)


class _FillingSpool(io.FileIO):
    """A spool file on a disk that fills up after the preamble (128 bytes)."""

    def write(self, data: Any) -> int:
        if self.tell() + len(data) > 128:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(data)


@pytest.mark.parametrize(
    "where", ["storing a small data set", "no spool file", "disk fills mid data set"]
)
def test_a_full_disk_answers_out_of_resources_and_the_association_goes_on(
    server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """A small data set is kept in memory and written once, into the blob store; a
    larger one is spooled as it arrives (here: anything over 1 kB)."""
    settings, port, _ = server
    full = OSError(errno.ENOSPC, "No space left on device")
    if where == "storing a small data set":
        write_all = file_storage._write_all
        calls = 0

        def write_once_full(fd: int, data: bytes) -> None:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise full
            write_all(fd, data)

        monkeypatch.setattr(file_storage, "_write_all", write_once_full)
    else:
        monkeypatch.setattr(store_session, "IN_MEMORY_LIMIT", 1024)
        spool_ahead = store_session._new_spool
        spools = 0

        def new_spool() -> tuple[Path, Any]:
            nonlocal spools
            spools += 1
            if spools > 1:
                return spool_ahead()
            if where == "no spool file":
                raise full
            path = tmp_path / "filling.dcm"
            return path, _FillingSpool(path, "w")

        monkeypatch.setattr(store_session, "_new_spool", new_spool)
    assoc = ct_storage_association(port)
    try:
        refused = assoc.send_c_store(CT_SMALL)
        stored = assoc.send_c_store(CT_SMALL)  # the disk has room again
    finally:
        assoc.release()
    assert refused.Status == 0xA700
    assert "No space left on device" in refused.ErrorComment
    assert stored.Status == 0x0000
    assert stored_count(settings) == 1
    assert not (tmp_path / "filling.dcm").exists()
    blobs = [p for p in (settings.data_dir / "blobs").rglob("*.dcm") if ".tmp" not in p.parts]
    assert len(blobs) == 1, "the refused instance left no fragment"


@pytest.mark.parametrize("spooled", [False, True], ids=["in memory", "spooled"])
def test_a_released_association_leaves_no_spool_file(
    server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spooled: bool
) -> None:
    """Small data sets never touch the spool folder; larger ones leave nothing there."""
    settings, port, _ = server
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))  # where the listener spools
    if spooled:
        monkeypatch.setattr(store_session, "IN_MEMORY_LIMIT", 1024)
    made: list[Path] = []
    new_spool = store_session._new_spool

    def recorded() -> tuple[Path, Any]:
        path, file = new_spool()
        made.append(path)
        return path, file

    monkeypatch.setattr(store_session, "_new_spool", recorded)
    assoc = ct_storage_association(port)
    try:
        statuses = [assoc.send_c_store(CT_SMALL).Status for _ in range(3)]
    finally:
        assoc.release()
    assert statuses == [0, 0, 0]
    assert len(made) == (3 if spooled else 0)
    assert list(spool.iterdir()) == []
    assert stored_count(settings) == 1


def test_a_connection_cut_mid_data_set_leaves_no_spool_file(
    raw, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, port, sock = raw
    sop = str(pydicom.dcmread(CT_SMALL, stop_before_pixels=True).SOPInstanceUID)
    data = dataset_bytes(CT_SMALL)
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))  # where the listener spools
    before: set[Path] = set()
    sock.sendall(p_data(pdv(1, 0x03, command_bytes(1, sop))))
    sock.sendall(p_data(pdv(1, 0x00, data[:1000])))
    time.sleep(0.2)
    sock.close()
    deadline = time.monotonic() + 10
    while set(spool.glob("*.dcm")) - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert set(spool.glob("*.dcm")) - before == set()
    assert stored_count(settings) == 0
    assert echo_works(port)
