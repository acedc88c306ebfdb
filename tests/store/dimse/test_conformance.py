"""C-CANCEL of C-FIND/C-MOVE/C-GET (PS3.7 §9.1.2.1.x, PS3.4 C.4) and the C-STORE whose
command and data set name different instances (PS3.4 B.2.2), on both paths.

pynetdicom is the requestor: dcmtk's findscu cannot cancel mid-query.
"""

from __future__ import annotations

import copy
import io
import random
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE, build_context, evt
from pynetdicom.dsutils import decode, encode
from pynetdicom.presentation import StoragePresentationContexts
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet as GET
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove as MOVE
from tests.store.dimse.support import request_pdu, serving
from tests.support.network import free_port

from jip import errors
from jip.config import DicomPeer
from jip.runtime import Runtime
from jip.samples import image_series, random_patient, write_datasets
from jip.store.dimse import handlers
from jip.store.dimse.pdu import read_pdu

MATCHES = 600
CANCEL = 0xFE00
PENDING = (0xFF00, 0xFF01)
DEST = DicomPeer(ae_title="DEST", host="127.0.0.1", port=1)  # port set per test
PEERS = {"caller": DicomPeer(ae_title="CALLER", host="127.0.0.1", port=9)}


def fill(runtime: Runtime, folder: Path, count: int) -> str:
    """``count`` instances of one series in the catalog; its Series Instance UID."""
    series = image_series(patient=random_patient(random.Random(1), 1), slices=count, rows=4, columns=4)  # fmt: skip
    for path in write_datasets(series, folder):
        runtime.ingestor.ingest_file(path, "CALLER")
    return str(series[0].SeriesInstanceUID)


def image_query(series_uid: str) -> Dataset:
    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    query.StudyInstanceUID = ""
    query.SeriesInstanceUID = series_uid
    query.SOPInstanceUID = ""
    return query


def cancel_after_first(responses: Iterator[tuple[Any, Any]], assoc: Any, model: str) -> tuple[int, int]:  # fmt: skip
    """Iterate the responses, cancelling at the first pending one: (pendings, final status)."""
    pendings, final = 0, None
    for status, _ in responses:
        if status is None:
            break
        if status.Status in PENDING:
            pendings += 1
            if pendings == 1:
                assoc.send_c_cancel(7, query_model=model)
        else:
            final = int(status.Status)
    assert final is not None, "no final response"
    return pendings, final


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[int, str, Runtime, list[Dataset]]]:
    received: list[Dataset] = []

    def on_store(event: Any) -> int:
        received.append(event.dataset)
        return 0

    dest = AE(ae_title="DEST")
    dest.supported_contexts = StoragePresentationContexts
    dest_port = free_port()
    dest_server = dest.start_server(
        ("127.0.0.1", dest_port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    peers = {**PEERS, "dest": DEST.model_copy(update={"port": dest_port})}
    try:
        with serving(tmp_path / "site", peers=peers) as (_, server, runtime):
            uid = fill(runtime, tmp_path / "files", MATCHES)
            yield server.server_address[1], uid, runtime, received
    finally:
        dest_server.shutdown()


# -- C-CANCEL --------------------------------------------------------------------------
def test_c_cancel_stops_a_c_find_with_status_cancel(site, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each match takes a millisecond, as on a busy catalog: on an idle machine all 600
    responses could otherwise be sent before the peer has read the first."""
    port, series_uid, _, _ = site
    respond = handlers.find_response

    def slowly(*args: Any) -> Dataset:
        time.sleep(0.001)
        return respond(*args)

    monkeypatch.setattr(handlers, "find_response", slowly)
    ae = AE(ae_title="CALLER")
    ae.add_requested_context(FIND)
    assoc = ae.associate("127.0.0.1", port, ae_title="JIP")
    try:
        responses = assoc.send_c_find(image_query(series_uid), FIND, msg_id=7)
        pendings, final = cancel_after_first(responses, assoc, FIND)
    finally:
        assoc.release()
    assert final == CANCEL
    assert pendings < MATCHES


def test_c_cancel_stops_a_c_get_with_status_cancel(site) -> None:
    port, series_uid, _, _ = site
    stored: list[str] = []

    def on_store(event: Any) -> int:
        stored.append(str(event.request.AffectedSOPInstanceUID))
        return 0

    ae = AE(ae_title="CALLER")
    ae.add_requested_context(GET)
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    role = build_role(CTImageStorage)
    assoc = ae.associate(
        "127.0.0.1",
        port,
        ae_title="JIP",
        ext_neg=[role],
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    try:
        query = image_query(series_uid)
        query.QueryRetrieveLevel = "SERIES"
        del query.SOPInstanceUID
        _, final = cancel_after_first(assoc.send_c_get(query, GET, msg_id=7), assoc, GET)
    finally:
        assoc.release()
    assert final == CANCEL
    assert len(stored) < MATCHES


def test_c_cancel_stops_a_c_move_with_status_cancel(site) -> None:
    port, series_uid, _, received = site
    ae = AE(ae_title="CALLER")
    ae.add_requested_context(MOVE)
    assoc = ae.associate("127.0.0.1", port, ae_title="JIP")
    try:
        query = image_query(series_uid)
        query.QueryRetrieveLevel = "SERIES"
        del query.SOPInstanceUID
        responses = assoc.send_c_move(query, "DEST", MOVE, msg_id=7)
        _, final = cancel_after_first(responses, assoc, MOVE)
    finally:
        assoc.release()
    assert final == CANCEL
    assert len(received) < MATCHES


def build_role(sop_class: str) -> Any:
    from pynetdicom.pdu_primitives import SCP_SCU_RoleSelectionNegotiation

    role = SCP_SCU_RoleSelectionNegotiation()
    role.sop_class_uid = sop_class
    role.scp_role = True
    role.scu_role = False
    return role


# -- the command's SOP Instance UID against the data set's --------------------------------
def _command(sop_instance: str, sop_class: str = CTImageStorage) -> bytes:
    ds = Dataset()
    ds.AffectedSOPClassUID = sop_class
    ds.CommandField = 0x0001
    ds.MessageID = 7
    ds.Priority = 0
    ds.CommandDataSetType = 0x0000
    ds.AffectedSOPInstanceUID = sop_instance
    ds.CommandGroupLength = len(encode(ds, True, True) or b"")
    return encode(ds, True, True) or b""


def _p_data(context_id: int, control: int, data: bytes) -> bytes:
    pdv = struct.pack(">LBB", len(data) + 2, context_id, control) + data
    return struct.pack(">BBL", 0x04, 0, len(pdv)) + pdv


def _store_raw(port: int, abstract: str, command: bytes, data: bytes) -> Dataset:
    """Associate as CALLER proposing ``abstract`` (and CT storage, if that is not it),
    send one C-STORE on the CT context; its response's command set."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(_request_with_ct(abstract))
        assert read_pdu(sock, 1 << 20)[0] == 0x02
        ct = 1 if abstract == CTImageStorage else 3
        sock.sendall(_p_data(ct, 0x03, command) + _p_data(ct, 0x02, data))
        pdu_type, pdu = read_pdu(sock, 1 << 20)
        assert pdu_type == 0x04
        length = struct.unpack_from(">L", pdu, 6)[0]
        return decode(io.BytesIO(bytes(pdu[12 : 10 + length])), True, True)


def _request_with_ct(abstract: str) -> bytes:
    if abstract == CTImageStorage:
        return request_pdu(CTImageStorage, calling="CALLER")
    from pynetdicom.pdu import A_ASSOCIATE_RQ
    from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification

    request = A_ASSOCIATE()
    request.application_context_name = "1.2.840.10008.3.1.1.1"
    request.calling_ae_title, request.called_ae_title = "CALLER", "JIP"
    contexts = []
    for context_id, syntax in ((1, abstract), (3, CTImageStorage)):
        context = build_context(syntax, [ExplicitVRLittleEndian])
        context.context_id = context_id
        contexts.append(context)
    request.presentation_context_definition_list = contexts
    maximum = MaximumLengthNotification()
    maximum.maximum_length_received = 16384
    request.user_information = [maximum]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(request)
    return bytes(pdu.encode())


@pytest.mark.parametrize("abstract", [CTImageStorage, FIND], ids=["fast-path", "pynetdicom"])
@pytest.mark.parametrize("element", ["SOPInstanceUID", "SOPClassUID"])
def test_a_c_store_whose_command_names_another_instance_is_refused(
    tmp_path: Path, abstract: str, element: str
) -> None:
    series = image_series(patient=random_patient(random.Random(2), 2), slices=1, rows=4, columns=4)  # fmt: skip
    ds = copy.deepcopy(series[0])
    command_uid = "1.2.3.4"
    if element == "SOPInstanceUID":
        ds.SOPInstanceUID = "1.2.3.5"
        command = _command(command_uid)
    else:
        ds.SOPInstanceUID = command_uid
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"  # MR Image Storage in a CT command
        command = _command(command_uid)
    data = encode(ds, False, True)
    assert data is not None
    with serving(tmp_path, peers=PEERS) as (_, server, runtime):
        answer = _store_raw(server.server_address[1], abstract, command, data)
        assert answer.Status == 0xA900  # Data Set does not match SOP Class
        comment = str(answer.get("ErrorComment", ""))
        assert ("SOP Instance UID 1.2.3.5" if element == "SOPInstanceUID" else "SOP Class UID") in comment  # fmt: skip
        assert runtime.catalog.counts()["instances"] == 0
        for uid in (command_uid, "1.2.3.5"):
            with pytest.raises(errors.NotFound):
                runtime.catalog.instance(uid)
