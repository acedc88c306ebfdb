"""The storage fast path: associations that only send images skip pynetdicom's machinery.

Why: pynetdicom moves every message through a DUL thread, its state machine, a DIMSE
queue and a reactor thread, ~2 ms of Python per C-STORE before the data is even
looked at; a PACS forwarding images over one association is held to a few hundred
instances/s by that alone. An association whose presentation contexts are all storage
or verification (what a forwarding PACS, a modality or storescu proposes) is served
here by one blocking loop on the connection's thread: read a PDU, append dataset
fragments to the spool file, ingest, answer. Everything else (query/retrieve, SCP/SCU
role selection, asynchronous operations, extended negotiation, a calling AE that is not
allowed, the association limit) goes to pynetdicom unchanged, with the request PDU
replayed (:func:`jip.store.dimse.serve_connection`).

The PDUs are those of PS3.8 §9.3; A-ASSOCIATE-RQ/AC are decoded and encoded with
pynetdicom's PDU classes, so only P-DATA-TF and the DIMSE command set (PS3.7 §6.3,
Implicit VR Little Endian, a handful of group 0000 elements) are read here. Received
datasets are spooled to a Part 10 file exactly as pynetdicom's
``STORE_RECV_CHUNKED_DATASET`` does, and handed to the same ingest as every C-STORE.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
    UserIdentityNegotiation,
)
from pynetdicom.presentation import PresentationContext

from jip.store.dimse_status import GeneralStatus, error_comment

log = logging.getLogger(__name__)

# PS3.8 §9.3.1: PDU types.
A_ASSOCIATE_RQ_TYPE = 0x01
P_DATA_TF_TYPE = 0x04
A_RELEASE_RQ_TYPE = 0x05
A_ABORT_TYPE = 0x07
_A_RELEASE_RP = bytes.fromhex("06 00 00000004 00000000")
# A-ABORT from the service provider, reason "unexpected PDU" / "not specified".
_A_ABORT_UNEXPECTED = bytes.fromhex("07 00 00000004 0000 02 02")
_A_ABORT_NOT_SPECIFIED = bytes.fromhex("07 00 00000004 0000 02 00")
# A-ASSOCIATE-RJ: rejected-transient, by the service provider (presentation), local
# limit exceeded (PS3.8 §9.3.4), the answer pynetdicom gives at its association limit.
_A_ASSOCIATE_RJ_BUSY = bytes.fromhex("03 00 00000004 00 02 03 02")
# The largest A-ASSOCIATE-RQ we read: 128 contexts with many syntaxes stay far below.
_REQUEST_LIMIT = 1024 * 1024

# PS3.7 §9.3/§E: command fields and the "no data set" marker.
C_STORE_RQ, C_STORE_RSP = 0x0001, 0x8001
C_ECHO_RQ, C_ECHO_RSP = 0x0030, 0x8030
C_CANCEL_RQ = 0x0FFF
NO_DATA_SET = 0x0101

# Group 0000 tags the fast path reads or writes (PS3.7 Annex E).
_AFFECTED_SOP_CLASS = 0x00000002
_COMMAND_FIELD = 0x00000100
_MESSAGE_ID = 0x00000110
_MESSAGE_ID_RESPONDED = 0x00000120
_DATA_SET_TYPE = 0x00000800
_STATUS = 0x00000900
_ERROR_COMMENT = 0x00000902
_AFFECTED_SOP_INSTANCE = 0x00001000
_US_TAGS = frozenset((_COMMAND_FIELD, _MESSAGE_ID, _DATA_SET_TYPE, _STATUS, 0x00000700))

# A peer may not send PDUs larger than we announced; some slack for sloppy peers, but
# a length field of gigabytes is an attack or garbage, not a PDU.
_PDU_LIMIT_FACTOR = 4

# (status, error comment or None) for the spooled file at path from calling AE.
StoreHandler = Callable[[Path, str], tuple[int, str | None]]


class ProtocolError(Exception):
    """The peer broke PS3.8; the association is aborted."""


# -- reading PDUs -----------------------------------------------------------------------
def recv_exactly(sock: socket.socket, count: int) -> bytearray:
    """``count`` bytes from ``sock``; ConnectionError if the peer closes first."""
    buffer = bytearray(count)
    view = memoryview(buffer)
    done = 0
    while done < count:
        got = sock.recv_into(view[done:], count - done)
        if not got:
            raise ConnectionError(f"connection closed after {done} of {count} bytes")
        done += got
    return buffer


def read_pdu(sock: socket.socket, limit: int) -> tuple[int, bytearray]:
    """One whole PDU: (type, the PDU's bytes including its 6-byte header)."""
    header = recv_exactly(sock, 6)
    pdu_type, _, length = struct.unpack(">BBL", header)
    if length > limit:
        raise ProtocolError(f"PDU of {length} bytes exceeds the limit of {limit}")
    return pdu_type, header + recv_exactly(sock, length)


# -- association negotiation --------------------------------------------------------------
@dataclass(frozen=True)
class Offer:
    """What this fast path accepts: abstract syntax → transfer syntaxes we support."""

    syntaxes: dict[str, frozenset[str]]
    allowed_calling_aets: frozenset[str]

    def serves(self, request: A_ASSOCIATE) -> bool:
        """Whether the fast path can serve everything this association proposes."""
        calling = str(request.calling_ae_title).strip()
        if self.allowed_calling_aets and calling not in self.allowed_calling_aets:
            return False  # pynetdicom answers the A-ASSOCIATE-RJ
        contexts = request.presentation_context_definition_list
        if not contexts or any(str(cx.abstract_syntax) not in self.syntaxes for cx in contexts):
            return False
        # Only items the fast path honours by ignoring them (PS3.7 D.3.3.7: a user
        # identity without a requested response needs none).
        for item in request.user_information:
            if isinstance(item, UserIdentityNegotiation):
                if item.positive_response_requested:
                    return False
            elif not isinstance(
                item,
                MaximumLengthNotification
                | ImplementationClassUIDNotification
                | ImplementationVersionNameNotification,
            ):
                return False
        return True

    def negotiate(self, request: A_ASSOCIATE) -> list[PresentationContext]:
        """The result per proposed context (PS3.8 §9.3.3.2).

        The requestor's first proposed transfer syntax that we support wins, so a sender
        that prefers its compressed original sends it as it is (see
        :func:`jip.store.dimse_handlers.on_association_requested`).
        """
        results = []
        for proposed in request.presentation_context_definition_list:
            ours = self.syntaxes[str(proposed.abstract_syntax)]
            context = PresentationContext()
            context.context_id = proposed.context_id
            context.abstract_syntax = proposed.abstract_syntax
            chosen = next((ts for ts in proposed.transfer_syntax if str(ts) in ours), None)
            context.transfer_syntax = [chosen or proposed.transfer_syntax[0]]
            context.result = 0x00 if chosen else 0x04  # transfer syntaxes not supported
            results.append(context)
        return results


def accept_pdu(request: A_ASSOCIATE, contexts: list[PresentationContext], max_pdu: int) -> bytes:
    """The A-ASSOCIATE-AC PDU for ``request`` with the negotiated ``contexts``."""
    accept = A_ASSOCIATE()
    accept.application_context_name = request.application_context_name
    accept.calling_ae_title = request.calling_ae_title
    accept.called_ae_title = request.called_ae_title
    accept.result = 0x00
    accept.presentation_context_definition_results_list = contexts
    maximum = MaximumLengthNotification()
    maximum.maximum_length_received = max_pdu
    implementation = ImplementationClassUIDNotification()
    implementation.implementation_class_uid = PYNETDICOM_IMPLEMENTATION_UID
    version = ImplementationVersionNameNotification()
    version.implementation_version_name = PYNETDICOM_IMPLEMENTATION_VERSION
    accept.user_information = [maximum, implementation, version]
    pdu = A_ASSOCIATE_AC()
    pdu.from_primitive(accept)
    return bytes(pdu.encode())


def decode_request(raw: bytes | bytearray) -> A_ASSOCIATE:
    pdu = A_ASSOCIATE_RQ()
    pdu.decode(bytes(raw))
    return pdu.to_primitive()


# -- DIMSE command sets ------------------------------------------------------------------
def decode_command(data: bytes | bytearray) -> dict[int, int | str]:
    """A command set (Implicit VR Little Endian, PS3.7 §6.3.1): tag → US or text value."""
    command: dict[int, int | str] = {}
    at, end = 0, len(data)
    while at + 8 <= end:
        group, element, length = struct.unpack_from("<HHL", data, at)
        at += 8
        if at + length > end:
            raise ProtocolError("command set element runs past the end of the command")
        tag = (group << 16) | element
        value = bytes(data[at : at + length])
        at += length
        if tag in _US_TAGS and length == 2:
            command[tag] = struct.unpack("<H", value)[0]
        elif tag in (_AFFECTED_SOP_CLASS, _AFFECTED_SOP_INSTANCE):
            command[tag] = value.rstrip(b"\0 ").decode("ascii", "replace")
    if at != end:
        raise ProtocolError("command set ends inside an element header")
    return command


def _element(tag: int, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\0" if tag in (_AFFECTED_SOP_CLASS, _AFFECTED_SOP_INSTANCE) else b" "
    return struct.pack("<HHL", tag >> 16, tag & 0xFFFF, len(value)) + value


def encode_response(
    command_field: int,
    message_id: int,
    status: int,
    sop_class: str,
    sop_instance: str | None = None,
    comment: str | None = None,
) -> bytes:
    """A response command set with its group length, elements in tag order."""
    elements = [
        _element(_AFFECTED_SOP_CLASS, sop_class.encode("ascii")),
        _element(_COMMAND_FIELD, struct.pack("<H", command_field)),
        _element(_MESSAGE_ID_RESPONDED, struct.pack("<H", message_id)),
        _element(_DATA_SET_TYPE, struct.pack("<H", NO_DATA_SET)),
        _element(_STATUS, struct.pack("<H", status)),
    ]
    if comment:
        elements.append(_element(_ERROR_COMMENT, error_comment(comment).encode("ascii", "replace")))
    if sop_instance:
        elements.append(_element(_AFFECTED_SOP_INSTANCE, sop_instance.encode("ascii")))
    body = b"".join(elements)
    return _element(0x00000000, struct.pack("<L", len(body))) + body


def file_meta(sop_class: str, sop_instance: str, transfer_syntax: str, source_ae: str) -> bytes:
    """Preamble, prefix and File Meta Information (PS3.10 §7.1) of a received data set.

    Encoded here (Explicit VR Little Endian, a fixed set of elements) because pydicom's
    writer costs ~0.15 ms, a tenth of a small instance's whole budget.
    """

    def short(element: int, vr: bytes, value: str, pad: bytes) -> bytes:
        data = value[:64].encode("ascii", "replace")
        data += pad * (len(data) % 2)
        return struct.pack("<HH2sH", 0x0002, element, vr, len(data)) + data

    elements = b"".join(
        (
            struct.pack("<HH2s2xL", 0x0002, 0x0001, b"OB", 2) + b"\0\1",
            short(0x0002, b"UI", sop_class, b"\0"),
            short(0x0003, b"UI", sop_instance, b"\0"),
            short(0x0010, b"UI", transfer_syntax, b"\0"),
            short(0x0012, b"UI", PYNETDICOM_IMPLEMENTATION_UID, b"\0"),
            short(0x0013, b"SH", PYNETDICOM_IMPLEMENTATION_VERSION, b" "),
            short(0x0016, b"AE", source_ae, b" ") if source_ae else b"",
        )
    )
    length = struct.pack("<HH2sHL", 0x0002, 0x0000, b"UL", 4, len(elements))
    return b"\0" * 128 + b"DICM" + length + elements


def p_data_pdu(context_id: int, command: bytes) -> bytes:
    """One P-DATA-TF with one PDV: the last fragment of a command (PS3.8 §E.2)."""
    pdv = struct.pack(">LBB", len(command) + 2, context_id, 0x03) + command
    return struct.pack(">BBL", P_DATA_TF_TYPE, 0, len(pdv)) + pdv


# -- the association -------------------------------------------------------------------
@dataclass
class _Incoming:
    """The message being received: its command, then its dataset's spool file."""

    context_id: int
    command: bytearray
    fields: dict[int, int | str] | None = None
    spool: BinaryIO | None = None
    path: Path | None = None


class StoreSession:
    """One storage association, served on the connection's own thread."""

    def __init__(
        self,
        sock: socket.socket,
        request: A_ASSOCIATE,
        offer: Offer,
        store: StoreHandler,
        *,
        max_pdu: int,
        timeout_s: float,
    ) -> None:
        self.sock = sock
        self.request = request
        self.offer = offer
        self.store = store
        self.max_pdu = max_pdu
        self.timeout_s = timeout_s
        self.calling_ae = str(request.calling_ae_title).strip()
        self.contexts: dict[int, tuple[str, str]] = {}  # id -> (abstract, transfer syntax)
        self._stopping = threading.Event()
        self._incoming: _Incoming | None = None

    def run(self) -> None:
        """Accept, then serve messages until release, abort or a broken connection."""
        contexts = self.offer.negotiate(self.request)
        self.contexts = {
            int(cx.context_id): (str(cx.abstract_syntax), str(cx.transfer_syntax[0]))
            for cx in contexts
            if cx.result == 0x00 and cx.context_id is not None
        }
        self.sock.settimeout(self.timeout_s)
        try:
            self.sock.sendall(accept_pdu(self.request, contexts, self.max_pdu))
            self._serve()
        except ProtocolError as exc:
            log.warning("aborting association", extra={"peer": self.calling_ae, "error": str(exc)})
            self._send_quietly(_A_ABORT_UNEXPECTED)
        except TimeoutError:
            log.warning("association timed out", extra={"peer": self.calling_ae})
            self._send_quietly(_A_ABORT_NOT_SPECIFIED)
        except (ConnectionError, OSError) as exc:
            if not self._stopping.is_set():
                log.info("association closed", extra={"peer": self.calling_ae, "error": str(exc)})
        finally:
            self._discard_incoming()
            with contextlib.suppress(OSError):
                self.sock.close()

    def abort(self) -> None:
        """Stop at once (shutdown): an unanswered instance was never acknowledged."""
        self._stopping.set()
        self._send_quietly(_A_ABORT_NOT_SPECIFIED)
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def _serve(self) -> None:
        limit = self.max_pdu * _PDU_LIMIT_FACTOR + 6
        while True:
            pdu_type, pdu = read_pdu(self.sock, limit)
            if pdu_type == P_DATA_TF_TYPE:
                self._p_data(memoryview(pdu)[6:])
            elif pdu_type == A_RELEASE_RQ_TYPE:
                if self._incoming is not None:
                    raise ProtocolError("release requested in the middle of a message")
                self.sock.sendall(_A_RELEASE_RP)
                return
            elif pdu_type == A_ABORT_TYPE:
                log.info("association aborted by the peer", extra={"peer": self.calling_ae})
                return
            else:
                raise ProtocolError(f"unexpected PDU type 0x{pdu_type:02X}")

    def _p_data(self, body: memoryview) -> None:
        at = 0
        while at < len(body):
            if at + 6 > len(body):
                raise ProtocolError("P-DATA-TF ends inside a PDV header")
            length, context_id, control = struct.unpack_from(">LBB", body, at)
            end = at + 4 + length
            if length < 2 or end > len(body):
                raise ProtocolError("PDV length runs past the end of the P-DATA-TF PDU")
            self._fragment(context_id, control, body[at + 6 : end])
            at = end

    def _fragment(self, context_id: int, control: int, data: memoryview) -> None:
        if context_id not in self.contexts:
            raise ProtocolError(f"presentation context {context_id} was not accepted")
        is_command, is_last = bool(control & 0x01), bool(control & 0x02)
        incoming = self._incoming
        if is_command:
            if incoming is None:
                incoming = self._incoming = _Incoming(context_id, bytearray())
            elif incoming.fields is not None:
                raise ProtocolError("a command fragment where the data set was expected")
            incoming.command += data
            if is_last:
                self._command_complete(incoming)
            return
        if incoming is None or incoming.spool is None or context_id != incoming.context_id:
            raise ProtocolError("a data set fragment without a C-STORE command before it")
        incoming.spool.write(data)
        if is_last:
            self._store(incoming)

    def _command_complete(self, incoming: _Incoming) -> None:
        fields = incoming.fields = decode_command(incoming.command)
        field = fields.get(_COMMAND_FIELD)
        has_data = fields.get(_DATA_SET_TYPE, NO_DATA_SET) != NO_DATA_SET
        if field == C_ECHO_RQ and not has_data:
            self._incoming = None
            self._respond(incoming, C_ECHO_RSP, GeneralStatus.SUCCESS)
        elif field == C_CANCEL_RQ:
            self._incoming = None  # nothing to cancel: C-STORE and C-ECHO are answered at once
        elif field == C_STORE_RQ and has_data:
            incoming.path, incoming.spool = self._open_spool(incoming)
        else:
            raise ProtocolError(
                f"unsupported DIMSE command 0x{field or 0:04X} on a storage association"
            )

    def _open_spool(self, incoming: _Incoming) -> tuple[Path, BinaryIO]:
        """A Part 10 file: preamble and file meta from the command, then the data set."""
        assert incoming.fields is not None
        _, transfer_syntax = self.contexts[incoming.context_id]
        meta = file_meta(
            str(incoming.fields.get(_AFFECTED_SOP_CLASS, "")),
            str(incoming.fields.get(_AFFECTED_SOP_INSTANCE, "")),
            transfer_syntax,
            self.calling_ae,
        )
        fd, name = tempfile.mkstemp(suffix=".dcm")
        spool = os.fdopen(fd, "wb", buffering=1024 * 1024)
        try:
            spool.write(meta)
        except BaseException:
            spool.close()
            Path(name).unlink(missing_ok=True)
            raise
        return Path(name), spool

    def _store(self, incoming: _Incoming) -> None:
        assert incoming.spool is not None and incoming.path is not None
        incoming.spool.close()
        incoming.spool = None
        self._incoming = None
        status, comment = self.store(incoming.path, self.calling_ae)  # consumes the file
        self._respond(incoming, C_STORE_RSP, status, comment)

    def _respond(
        self, incoming: _Incoming, field: int, status: int, comment: str | None = None
    ) -> None:
        fields = incoming.fields or {}
        sop_class = str(fields.get(_AFFECTED_SOP_CLASS) or self.contexts[incoming.context_id][0])
        instance = fields.get(_AFFECTED_SOP_INSTANCE)
        command = encode_response(
            field,
            int(fields.get(_MESSAGE_ID, 0)),
            status,
            sop_class,
            str(instance) if instance else None,
            comment,
        )
        self.sock.sendall(p_data_pdu(incoming.context_id, command))

    def _discard_incoming(self) -> None:
        incoming, self._incoming = self._incoming, None
        if incoming is not None and incoming.spool is not None:
            incoming.spool.close()
        if incoming is not None and incoming.path is not None:
            incoming.path.unlink(missing_ok=True)

    def _send_quietly(self, pdu: bytes) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(pdu)


def storage_offer(
    supported: Collection[PresentationContext], allowed_calling_aets: Collection[str]
) -> Offer:
    """The fast path's offer: the AE's storage and verification contexts."""
    syntaxes = {
        str(cx.abstract_syntax): frozenset(str(ts) for ts in cx.transfer_syntax)
        for cx in supported
        if is_storage_or_verification(str(cx.abstract_syntax))
    }
    return Offer(syntaxes, frozenset(a.strip() for a in allowed_calling_aets))


def is_storage_or_verification(abstract_syntax: str) -> bool:
    """Storage SOP classes live under 1.2.840.10008.5.1.4.1.1 (PS3.4 B.5); Verification."""
    return abstract_syntax == "1.2.840.10008.1.1" or (
        abstract_syntax.startswith("1.2.840.10008.5.1.4.1.1.")
    )


class FastPath:
    """Takes the storage associations of one server; tracks them for shutdown."""

    def __init__(
        self,
        offer: Offer,
        store: StoreHandler,
        *,
        max_pdu: int,
        acse_timeout_s: float,
        network_timeout_s: float,
        max_associations: int,
        others_active: Callable[[], int],
    ) -> None:
        self.offer = offer
        self.store = store
        self.max_pdu = max_pdu
        self.acse_timeout_s = acse_timeout_s
        self.network_timeout_s = network_timeout_s
        self.max_associations = max_associations
        self._others_active = others_active
        self._sessions: dict[StoreSession, threading.Thread] = {}
        self._lock = threading.Lock()

    def take(self, sock: socket.socket) -> bytes | None:
        """Serve ``sock`` if it asks for a storage association (blocks until it ends).

        Returns None when the connection was handled here, else the bytes already read
        (the request PDU), which pynetdicom must see first.
        """
        sock.settimeout(self.acse_timeout_s)
        try:
            pdu_type, raw = read_pdu(sock, _REQUEST_LIMIT)
        except (OSError, ProtocolError) as exc:
            log.info("connection closed before an association request", extra={"error": str(exc)})
            with contextlib.suppress(OSError):
                sock.close()
            return None
        if pdu_type != A_ASSOCIATE_RQ_TYPE:
            return bytes(raw)
        try:
            request = decode_request(raw)
        except Exception:  # pynetdicom decodes it again and answers as the standard says
            return bytes(raw)
        if not self.offer.serves(request):
            return bytes(raw)
        session = StoreSession(
            sock, request, self.offer, self.store,
            max_pdu=self.max_pdu, timeout_s=self.network_timeout_s,
        )  # fmt: skip
        with self._lock:
            busy = len(self._sessions) + self._others_active() >= self.max_associations
            if not busy:
                self._sessions[session] = threading.current_thread()
        if busy:
            log.warning("association limit reached", extra={"limit": self.max_associations})
            session._send_quietly(_A_ASSOCIATE_RJ_BUSY)
            sock.close()
            return None
        try:
            session.run()
        finally:
            with self._lock:
                self._sessions.pop(session, None)
        return None

    @property
    def sessions(self) -> list[StoreSession]:
        """The associations being served now."""
        with self._lock:
            return list(self._sessions)

    def drain(self, deadline: float) -> None:
        """Wait for the sessions until ``deadline`` (monotonic), then abort the rest.

        Returns once every session's thread has finished, so no ingest is running.
        """
        with self._lock:
            sessions = dict(self._sessions)
        for thread in sessions.values():
            thread.join(max(0.0, deadline - time.monotonic()))
        for session, thread in sessions.items():
            if thread.is_alive():
                log.warning("aborting association at shutdown", extra={"peer": session.calling_ae})
                session.abort()
                thread.join()
