"""The AE set up by jip.store.dimse.ae, in-process: TCP_NODELAY and transfer syntax choice."""

from __future__ import annotations

import socket

from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    MRImageStorage,
)
from pynetdicom import AE, build_context

from jip.store.dimse import scu
from jip.store.dimse.contexts import VERIFICATION


def nodelay(sock: socket.socket) -> bool:
    return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


def test_accepted_and_requested_sockets_have_tcp_nodelay(server) -> None:
    """Both ways in: the storage fast path (verification) and pynetdicom (a query)."""
    settings, port, running = server
    ae = scu.scu_ae(settings)
    assoc = ae.associate("127.0.0.1", port, contexts=[build_context(VERIFICATION)], ae_title="JIP")
    try:
        assert assoc.is_established
        assert nodelay(assoc.dul.socket.socket)
        (session,) = running.fast_path.sessions
        assert nodelay(session.sock)
    finally:
        assoc.release()
    find = build_context(scu.QueryRetrieveModel.STUDY_ROOT_FIND.value)
    assoc = ae.associate("127.0.0.1", port, contexts=[find], ae_title="JIP")
    try:
        assert assoc.is_established
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
