"""Shared by the DIMSE tests: the switches of a site open to every calling AE, an
in-process server, hand-made association requests."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import build_context
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification

from jip.config import AuthSettings, Settings, StoreSettings
from jip.runtime import Runtime, build_runtime
from jip.store.dimse.ae import SharedPortServer, build_ae, start_server
from jip.store.dimse.pdu import read_pdu

# Any calling AE may store, and its queries see every series (the pre-#12 defaults),
# as a site admin onboarding modalities sets on purpose. The tests of storage, the fast
# path and the Q/R services that send as ad-hoc AE titles (storescu's STORESCU,
# pynetdicom's SENDER, ...) run so; those of the closed defaults do not.
OPEN: dict[str, Any] = {"unknown_ae_store": True, "unknown_ae_queries": "all"}


@contextlib.contextmanager
def serving(data_dir: Path, **store: Any) -> Iterator[tuple[Settings, SharedPortServer, Runtime]]:
    """The site's AE in-process (no listener processes) with these store settings."""
    settings = Settings(
        data_dir=data_dir,
        store=StoreSettings(dicom_host="127.0.0.1", dicom_port=0, **store),
        auth=AuthSettings(enabled=False),
    )
    runtime = build_runtime(settings)
    running = start_server(build_ae(settings.store), runtime, "127.0.0.1", 0)
    assert isinstance(running, SharedPortServer)
    try:
        yield settings, running, runtime
    finally:
        running.shutdown()
        runtime.close()


def request_pdu(
    abstract: str = CTImageStorage,
    *,
    called: str = "JIP",
    calling: str = "RAW",
    also: Sequence[str] = (),
) -> bytes:
    """An A-ASSOCIATE-RQ PDU proposing ``abstract`` (context 1, Explicit VR LE), then
    each of ``also`` (contexts 3, 5, ...)."""
    request = A_ASSOCIATE()
    request.application_context_name = "1.2.840.10008.3.1.1.1"
    request.calling_ae_title = calling
    request.called_ae_title = called
    contexts = []
    for n, syntax in enumerate([abstract, *also]):
        context = build_context(syntax, [ExplicitVRLittleEndian])
        context.context_id = 2 * n + 1
        contexts.append(context)
    request.presentation_context_definition_list = contexts
    maximum = MaximumLengthNotification()
    maximum.maximum_length_received = 16384
    request.user_information = [maximum]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(request)
    return bytes(pdu.encode())


def answer_to(port: int, pdu: bytes) -> bytes:
    """Send ``pdu`` on a new connection; the whole PDU that answers it."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(pdu)
        _, answer = read_pdu(sock, 1 << 20)
        return bytes(answer)
