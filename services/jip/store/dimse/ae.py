"""The site's DICOM application entity: presentation contexts and the event wiring.

What the listener accepts (PS3.8 §9.3.2.2: per presentation context the acceptor
picks one of the proposed transfer syntaxes):

- every storage SOP class pynetdicom knows, in any transfer syntax pydicom knows,
  stored as received; the preference order below keeps lossless data lossless;
- Verification (PS3.4 Annex A);
- Patient Root and Study Root Query/Retrieve FIND, MOVE and GET (PS3.4 Annex C).

pynetdicom is set up once per process by :func:`configure_pynetdicom`: received
datasets are spooled to a file instead of memory, stored files are sent without being
decoded, and its per-PDU logging handlers are off. Every socket, accepted or
connected, gets ``TCP_NODELAY``: pynetdicom never sets it, and a C-STORE request is two
writes (command, then dataset), so with Nagle's algorithm the dataset waits for the
peer's delayed ACK of the command: 44 ms per instance measured, against 2.3 ms without.

Storage-only associations never reach pynetdicom: :mod:`jip.store.dimse.fast_path` takes them
in ``_RequestHandler.handle``; the threads of the rest wait on events
(:mod:`jip.store.dimse.reactor`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE, _config, evt
from pynetdicom.association import Association
from pynetdicom.presentation import AllStoragePresentationContexts, PresentationContext
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

from jip.config import StoreSettings
from jip.store.adapters import StoreAdapters
from jip.store.dimse import handlers, peers, storage_service
from jip.store.dimse.access import StoreAccess, identify
from jip.store.dimse.admission import Admission, Ticket
from jip.store.dimse.contexts import (
    STORAGE_TRANSFER_SYNTAXES,
    UNCOMPRESSED,
    VERIFICATION,
    QueryRetrieveModel,
)
from jip.store.dimse.fast_path import FastPath, Gate
from jip.store.dimse.pdu import Deadlines, storage_offer
from jip.store.dimse.reactor import WaitingSocket, make_event_driven
from jip.store.dimse.transport import on_association_requested, on_connection_open, set_no_delay

log = logging.getLogger(__name__)

# The largest PDU we accept. Peers send P-DATA up to this size, so a larger value
# means fewer PDUs (and fewer trips through pynetdicom's reactor) per instance.
MAXIMUM_PDU_SIZE = 1024 * 1024

EventHandler = tuple[evt.EventType, Callable[..., Any], list[Any]]

_configured = threading.Lock()


def configure_pynetdicom() -> None:
    """Process-wide pynetdicom options; idempotent."""
    with _configured:
        # C-STORE datasets go to a temporary file (tempfile.tempdir), never to memory.
        _config.STORE_RECV_CHUNKED_DATASET = True
        # send_c_store(path) streams the file's dataset bytes without decoding them.
        _config.STORE_SEND_CHUNKED_DATASET = True
        # The standard handlers log every PDU; they cost time on the hot path.
        _config.LOG_HANDLER_LEVEL = "none"
        _config.LOG_REQUEST_IDENTIFIERS = False
        _config.LOG_RESPONSE_IDENTIFIERS = False


# -- the application entity ---------------------------------------------------------------
class StreamingAssociation(Association):
    """An association that sends stored instances as stored (PS3.4 C.4.2.2, C.4.3.2).

    pynetdicom's Q/R service class hands every dataset a C-MOVE or C-GET handler yields
    to ``send_c_store``; a :class:`~jip.store.dimse.handlers.StoredFile` placeholder is
    streamed from its file here instead of being decoded and re-encoded.

    An accepted one also gives back its place in the association counts when it ends.
    """

    jip_ticket: tuple[Admission, Ticket] | None = None

    def run(self) -> None:
        try:
            super().run()
        finally:
            if self.jip_ticket is not None:
                admission, ticket = self.jip_ticket
                admission.release(ticket)

    def send_c_store(
        self,
        dataset: Any,
        msg_id: int = 1,
        priority: int = 2,
        originator_aet: str | None = None,
        originator_id: int | None = None,
    ) -> Dataset:
        if isinstance(dataset, handlers.StoredFile):
            return send_file(
                self,
                dataset,
                msg_id=msg_id,
                priority=priority,
                originator_aet=originator_aet,
                originator_id=originator_id,
            )
        return super().send_c_store(dataset, msg_id, priority, originator_aet, originator_id)


def send_file(assoc: Association, stored: handlers.StoredFile, **kwargs: Any) -> Dataset:
    """C-STORE a stored instance (see :func:`send_path`)."""
    with stored.opened() as path:
        return send_path(assoc, path, stored.transfer_syntax_uid, **kwargs)


def send_path(assoc: Association, path: Path, transfer_syntax: str, **kwargs: Any) -> Dataset:
    """C-STORE the Part 10 file at ``path``, its dataset bytes as they are on disk.

    Uncompressed data falls back to another uncompressed syntax the peer accepted;
    compressed data is never decoded here (transcoding is not supported yet), so
    without a context for its syntax pynetdicom raises ``ValueError``.
    """
    try:
        return Association.send_c_store(assoc, path, **kwargs)
    except ValueError:  # no context with exactly this transfer syntax
        if transfer_syntax not in UNCOMPRESSED:
            raise
        return Association.send_c_store(assoc, dcmread(path), **kwargs)


class _RequestHandler(RequestHandler):
    server: SharedPortServer

    def handle(self) -> None:
        """Every request passes the fast path's gate; storage-only associations stay there,
        the rest go to pynetdicom, which keeps the connection's place in the counts."""
        set_no_delay(self.request)
        server = self.server
        ticket = server.tickets.pop(self.request)
        handed_over = False
        try:
            assert server.fast_path is not None
            taken = server.fast_path.take(self.request, ticket)
            if taken is None:
                return
            self.request.settimeout(self.ae.network_timeout)
            assoc = self._create_association()
            assert isinstance(assoc, StreamingAssociation)
            assert isinstance(assoc.dul.socket, WaitingSocket)
            assoc.dul.socket._pending = taken.pending
            assoc.dul.socket.pdu_timeout_s = server.deadlines.pdu_s
            assoc.jip_ticket = (server.admission, ticket)
            evt.trigger(assoc, evt.EVT_CONN_OPEN, {"address": self.client_address})
            assoc.start()
            handed_over = True
        finally:
            if not handed_over:
                server.admission.release(ticket)

    def _create_association(self) -> Association:
        assoc = super()._create_association()
        assoc.__class__ = StreamingAssociation  # C-GET sends on the acceptor association
        assert assoc.dul.socket is not None
        make_event_driven(assoc, assoc.dul.socket)
        return assoc


class _SharedContexts(list[Any]):
    """The server's contexts, shared by every association instead of deep-copied.

    pynetdicom deep-copies the supported contexts for each association (tens of ms for
    ~180 storage classes x ~40 transfer syntaxes); negotiation only reads them.
    """

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        return list(self)


class SharedPortServer(ThreadedAssociationServer):
    """An association server whose port other listener processes may bind too.

    ``SO_REUSEPORT`` lets the kernel spread incoming connections over the processes.
    """

    request_queue_size = 128
    fast_path: FastPath | None = None
    admission: Admission
    deadlines: Deadlines
    # Fast-path associations run on the request threads: server_close() must not wait
    # for them (drain() does, with a deadline).
    daemon_threads = True
    block_on_close = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["request_handler"] = _RequestHandler
        super().__init__(*args, **kwargs)
        self.contexts = _SharedContexts(self.contexts)
        self.tickets: dict[socket.socket, Ticket] = {}

    def process_request(self, request: Any, client_address: Any) -> None:
        """Count the connection against its address at accept, before reading a byte."""
        ticket = self.admission.enter(str(client_address[0]))
        if ticket is None:  # a flood past the limit: no thread, no answer
            with contextlib.suppress(OSError):
                request.close()
            return
        self.tickets[request] = ticket
        super().process_request(request, client_address)

    def server_bind(self) -> None:
        assert self.socket is not None
        if hasattr(socket, "SO_REUSEPORT"):
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


class JipAE(AE):
    """pynetdicom's AE whose outgoing associations stream stored files, with TCP_NODELAY."""

    def _create_socket(self, assoc: Association, *args: Any, **kwargs: Any) -> AssociationSocket:
        sock = super()._create_socket(assoc, *args, **kwargs)
        make_event_driven(assoc, sock)
        return sock

    def associate(self, *args: Any, **kwargs: Any) -> Association:
        kwargs["evt_handlers"] = [
            *(kwargs.get("evt_handlers") or []),
            (evt.EVT_CONN_OPEN, on_connection_open),
        ]
        assoc = super().associate(*args, **kwargs)
        assoc.__class__ = StreamingAssociation
        return assoc


def build_ae(settings: StoreSettings) -> JipAE:
    """Our AE with every context we accept, limits and timeouts from ``settings``."""
    return configure_ae(accepting_ae(), settings)


def accepting_ae() -> JipAE:
    """An AE with every presentation context we accept and nothing from the settings: a
    listener process builds it while it waits for them (:mod:`jip.store.dimse.listener`).

    Each storage SOP class gets its own context holding every transfer syntax; the syntaxes
    are checked once, not once per class as ``add_supported_context`` would (about 7,000
    UID checks, tens of ms of a listener's start-up).
    """
    configure_pynetdicom()
    ae = JipAE()
    ae.add_supported_context(VERIFICATION)
    checked = PresentationContext()
    checked.transfer_syntax = [*STORAGE_TRANSFER_SYNTAXES]
    for cx in AllStoragePresentationContexts:
        storage = PresentationContext()
        storage.abstract_syntax = cx.abstract_syntax
        storage._transfer_syntax = list(checked.transfer_syntax)  # as the setter leaves it
        # scp_role: a C-GET requestor may act as Storage SCP on this association
        # (PS3.7 D.3.3.4 SCP/SCU role selection).
        storage.scu_role, storage.scp_role = False, True
        assert storage.abstract_syntax is not None
        ae._supported_contexts[storage.abstract_syntax] = storage  # as add_supported_context
    for model in QueryRetrieveModel:
        ae.add_supported_context(model.value)
    return ae


def configure_ae(ae: JipAE, settings: StoreSettings) -> JipAE:
    """Our AE title, limits and timeouts from ``settings``, on ``ae``."""
    ae.ae_title = settings.ae_title
    ae.maximum_associations = settings.max_associations
    ae.maximum_pdu_size = MAXIMUM_PDU_SIZE
    ae.network_timeout = settings.network_timeout_s
    ae.acse_timeout = settings.network_timeout_s
    ae.dimse_timeout = settings.network_timeout_s
    ae.connection_timeout = settings.network_timeout_s
    # Empty list: any calling AE may associate (PS3.8 A-ASSOCIATE-RJ reason 3 otherwise);
    # what it may then do is up to the peers (jip.store.dimse.access).
    ae.require_calling_aet = list(settings.allowed_calling_aets)
    # A request for another AE title is rejected, reason 7 (the fast path checks first).
    ae.require_called_aet = True
    return ae


def server_handlers(adapters: StoreAdapters) -> list[EventHandler]:
    """The one list of (event, handler, collaborators) the listener serves."""
    store = adapters.settings.store
    destinations = functools.partial(peers.peer_for_ae_title, adapters.engine, store.peers)
    catalogs = functools.partial(
        peers.callers_catalog, adapters.catalog, store.peers, unknown=store.unknown_ae_queries
    )
    callers = functools.partial(identify, adapters.engine, store.peers)
    access = StoreAccess(adapters.engine, unknown_ae_store=store.unknown_ae_store)
    return [
        (evt.EVT_REQUESTED, on_association_requested, []),
        (evt.EVT_C_ECHO, handlers.on_c_echo, []),
        (evt.EVT_C_STORE, storage_service.on_c_store, [adapters.ingestor, access, callers]),
        (evt.EVT_C_FIND, handlers.on_c_find, [catalogs]),
        (evt.EVT_C_MOVE, handlers.on_c_move, [catalogs, adapters.storage, destinations]),
        (evt.EVT_C_GET, handlers.on_c_get, [catalogs, adapters.storage]),
    ]


def start_server(
    ae: JipAE, adapters: StoreAdapters, host: str, port: int
) -> ThreadedAssociationServer:
    """Bind ``host:port`` (shared with sibling processes) and serve on a thread."""
    server = ae.make_server(
        (host, port),
        evt_handlers=server_handlers(adapters),  # type: ignore[arg-type]
        server_class=SharedPortServer,
    )
    ae._servers.append(server)  # so that ae.shutdown() stops it too
    assert isinstance(server, SharedPortServer)
    store = adapters.settings.store
    server.admission = Admission(
        per_address=store.max_associations_per_address, per_ae=store.max_associations_per_ae
    )
    server.deadlines = Deadlines(idle_s=store.network_timeout_s, pdu_s=store.pdu_timeout_s)
    gate = Gate(
        ae_title=store.ae_title.strip(),
        admission=server.admission,
        association_timeout_s=store.association_timeout_s,
        identify=functools.partial(identify, adapters.engine, store.peers),
    )
    access = StoreAccess(adapters.engine, unknown_ae_store=store.unknown_ae_store)
    server.fast_path = FastPath(
        storage_offer(server.contexts, ae.require_calling_aet),
        functools.partial(storage_service.store_file, adapters.ingestor, access),
        gate,
        max_pdu=MAXIMUM_PDU_SIZE,
        deadlines=server.deadlines,
        max_associations=ae.maximum_associations,
        others_active=lambda: len(server.active_associations),
    )
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="dicom-accept"
    )
    thread.daemon = True
    thread.start()
    return server


def drain(server: ThreadedAssociationServer, grace_s: float) -> None:
    """Stop accepting, let associations finish for ``grace_s``, then abort the rest.

    Every association thread is joined before returning, so no ingest is running when
    the adapters close; an aborted C-STORE was never acknowledged.
    """
    server.shutdown()
    deadline = time.monotonic() + grace_s
    fast_path = getattr(server, "fast_path", None)
    if fast_path is not None:
        fast_path.drain(deadline)
    for assoc in server.active_associations:
        assoc.join(max(0.0, deadline - time.monotonic()))
    for assoc in server.active_associations:
        log.warning("aborting association at shutdown", extra={"peer": assoc.requestor.ae_title})
        assoc.abort()
        assoc.join()
