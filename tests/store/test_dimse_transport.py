"""The AE set up by jip.store.dimse, in-process: TCP_NODELAY and transfer syntax choice."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    MRImageStorage,
)
from pynetdicom import AE, build_context

from jip.config import AuthSettings, Settings, StoreSettings
from jip.runtime import build_runtime
from jip.store import scu
from jip.store.dimse import build_ae, start_server
from jip.store.dimse_handlers import VERIFICATION


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[Settings, int, object]]:
    settings = Settings(
        data_dir=tmp_path,
        store=StoreSettings(dicom_host="127.0.0.1", dicom_port=0),
        auth=AuthSettings(enabled=False),
    )
    runtime = build_runtime(settings)
    ae = build_ae(settings.store)
    running = start_server(ae, runtime, "127.0.0.1", 0)
    try:
        yield settings, running.server_address[1], running
    finally:
        running.shutdown()
        runtime.close()


def nodelay(sock: socket.socket) -> bool:
    return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


def test_accepted_and_requested_sockets_have_tcp_nodelay(server) -> None:
    settings, port, running = server
    ae = scu.scu_ae(settings)
    assoc = ae.associate("127.0.0.1", port, contexts=[build_context(VERIFICATION)], ae_title="JIP")
    try:
        assert assoc.is_established
        assert nodelay(assoc.dul.socket.socket)
        (accepted,) = running.active_associations
        assert nodelay(accepted.dul.socket.socket)
    finally:
        assoc.release()


def test_the_requestors_transfer_syntax_order_decides(server) -> None:
    """A JPEG file offered with an uncompressed fallback is taken as JPEG, and vice versa."""
    _, port, _ = server
    ae = AE(ae_title="ORDER")
    contexts = [
        build_context(CTImageStorage, [JPEG2000Lossless, ExplicitVRLittleEndian]),
        build_context(MRImageStorage, [ImplicitVRLittleEndian, JPEGBaseline8Bit]),
    ]
    assoc = ae.associate("127.0.0.1", port, contexts=contexts, ae_title="JIP")
    try:
        accepted = {cx.abstract_syntax: cx.transfer_syntax[0] for cx in assoc.accepted_contexts}
        assert accepted == {
            CTImageStorage: JPEG2000Lossless,
            MRImageStorage: ImplicitVRLittleEndian,
        }
    finally:
        assoc.release()


def test_every_storage_class_and_query_retrieve_model_is_supported(server) -> None:
    _, _, running = server
    syntaxes = {str(cx.abstract_syntax) for cx in running.contexts}
    assert {CTImageStorage, MRImageStorage, VERIFICATION} <= syntaxes
    assert {m.value for m in scu.QueryRetrieveModel} <= syntaxes
    assert len(syntaxes) > 150
