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


def test_the_contexts_built_without_settings_are_those_add_supported_context_makes() -> None:
    """``accepting_ae`` sets pynetdicom's contexts directly (the syntaxes checked once);
    they must be what its public ``add_supported_context`` would have made."""
    from pynetdicom.presentation import AllStoragePresentationContexts

    from jip.config import StoreSettings
    from jip.store.dimse.ae import build_ae
    from jip.store.dimse.contexts import STORAGE_TRANSFER_SYNTAXES, QueryRetrieveModel

    public = AE(ae_title="JIP")
    public.add_supported_context(VERIFICATION)
    for cx in AllStoragePresentationContexts:
        assert cx.abstract_syntax is not None
        public.add_supported_context(
            cx.abstract_syntax, STORAGE_TRANSFER_SYNTAXES, scu_role=False, scp_role=True
        )
    for model in QueryRetrieveModel:
        public.add_supported_context(model.value)

    def described(ae: AE) -> list[tuple[object, ...]]:
        return [
            (cx.abstract_syntax, cx.transfer_syntax, cx.scu_role, cx.scp_role)
            for cx in ae.supported_contexts
        ]

    ours = build_ae(StoreSettings())
    assert described(ours) == described(public)
    storage = [cx for cx in ours.supported_contexts if cx.scp_role]
    assert len({id(cx.transfer_syntax) for cx in storage}) == len(storage)  # none shared
