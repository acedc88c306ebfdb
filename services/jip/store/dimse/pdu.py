"""DICOM Upper Layer PDUs, negotiation and DIMSE command sets for the storage fast path.

PS3.8 §9.3 (PDU layout) and PS3.7 §6.3/Annex E (command sets: Implicit VR Little
Endian, group 0000). A-ASSOCIATE-RQ/AC are decoded and encoded by pynetdicom's PDU
classes; only P-DATA-TF, the few fixed-size PDUs and the handful of command elements a
C-STORE or C-ECHO carries are handled here, because pynetdicom's general machinery for
them costs more than the rest of a small instance's ingest (see :mod:`jip.store.dimse.fast_path`).
"""

from __future__ import annotations

import functools
import socket
import struct
import time
from collections.abc import Collection
from dataclasses import dataclass, field

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
    UserIdentityNegotiation,
)
from pynetdicom.presentation import AllStoragePresentationContexts, PresentationContext

from jip.store.dimse.contexts import VERIFICATION
from jip.store.dimse.status import error_comment

# PS3.8 §9.3.1: PDU types.
A_ASSOCIATE_RQ_TYPE = 0x01
P_DATA_TF_TYPE = 0x04
A_RELEASE_RQ_TYPE = 0x05
A_ABORT_TYPE = 0x07
A_RELEASE_RP = bytes.fromhex("06 00 00000004 00000000")
# A-ABORT from the service provider, reason "unexpected PDU" / "not specified".
A_ABORT_UNEXPECTED = bytes.fromhex("07 00 00000004 0000 02 02")
A_ABORT_NOT_SPECIFIED = bytes.fromhex("07 00 00000004 0000 02 00")
# A-ASSOCIATE-RJ: rejected-transient, by the service provider (presentation), local
# limit exceeded (PS3.8 §9.3.4), the answer pynetdicom gives at its association limit.
A_ASSOCIATE_RJ_BUSY = bytes.fromhex("03 00 00000004 00 02 03 02")
# A-ASSOCIATE-RJ: rejected-permanent, by the service user, "called AE title not
# recognised" (PS3.8 §9.3.4, reason 7), as pynetdicom's require_called_aet answers.
A_ASSOCIATE_RJ_CALLED_AE = bytes.fromhex("03 00 00000004 00 01 01 07")
# The largest A-ASSOCIATE-RQ we read: 128 contexts with many syntaxes stay far below.
REQUEST_LIMIT = 1024 * 1024

# PS3.7 §9.3/§E: command fields and the "no data set" marker.
C_STORE_RQ, C_STORE_RSP = 0x0001, 0x8001
C_ECHO_RQ, C_ECHO_RSP = 0x0030, 0x8030
C_CANCEL_RQ = 0x0FFF
NO_DATA_SET = 0x0101

# Group 0000 tags the fast path reads or writes (PS3.7 Annex E).
AFFECTED_SOP_CLASS = 0x00000002
COMMAND_FIELD = 0x00000100
MESSAGE_ID = 0x00000110
MESSAGE_ID_RESPONDED = 0x00000120
DATA_SET_TYPE = 0x00000800
STATUS = 0x00000900
OFFENDING_ELEMENT = 0x00000901
ERROR_COMMENT = 0x00000902
AFFECTED_SOP_INSTANCE = 0x00001000
_US_TAGS = frozenset((COMMAND_FIELD, MESSAGE_ID, DATA_SET_TYPE, STATUS, 0x00000700))

# A peer may not send PDUs larger than we announced; some slack for sloppy peers, but
# a length field of gigabytes is an attack or garbage, not a PDU.
PDU_LIMIT_FACTOR = 4


class ProtocolError(Exception):
    """The peer broke PS3.8; the association is aborted."""


# -- reading PDUs -----------------------------------------------------------------------
@dataclass(frozen=True)
class Deadlines:
    """How long a peer may take: to start a PDU (idle), and to finish one it started."""

    idle_s: float
    pdu_s: float


def recv_exactly(sock: socket.socket, count: int, deadline: float | None = None) -> bytearray:
    """``count`` bytes from ``sock``; ConnectionError if the peer closes first.

    With a ``deadline`` (monotonic), TimeoutError once it passes, however the bytes
    trickle in: a socket timeout alone restarts with every byte.
    """
    buffer = bytearray(count)
    view = memoryview(buffer)
    done = 0
    while done < count:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{done} of {count} bytes arrived before the deadline")
            current = sock.gettimeout()
            if current is None or current > left:
                sock.settimeout(left)
        got = sock.recv_into(view[done:], count - done)
        if not got:
            raise ConnectionError(f"connection closed after {done} of {count} bytes")
        done += got
    return buffer


def read_pdu(
    sock: socket.socket,
    limit: int,
    deadlines: Deadlines | None = None,
    *,
    until: float | None = None,
) -> tuple[int, bytearray]:
    """One whole PDU: (type, the PDU's bytes including its 6-byte header).

    ``deadlines``: the first byte may take ``idle_s``, the whole PDU ``pdu_s`` from
    then; ``until``: the PDU must be whole by then (monotonic), first byte included.
    The socket's timeout is ``deadlines.idle_s`` again afterwards.
    """
    if deadlines is not None:
        sock.settimeout(deadlines.idle_s)
        header = bytearray(6)
        got = sock.recv_into(header, 6)
        if not got:
            raise ConnectionError("connection closed")
        until = time.monotonic() + deadlines.pdu_s
        if got < 6:
            header[got:] = recv_exactly(sock, 6 - got, until)
    else:
        header = recv_exactly(sock, 6, until)
    pdu_type, _, length = struct.unpack(">BBL", header)
    if length > limit:
        raise ProtocolError(f"PDU of {length} bytes exceeds the limit of {limit}")
    pdu = header + recv_exactly(sock, length, until)
    if deadlines is not None:
        sock.settimeout(deadlines.idle_s)
    return pdu_type, pdu


class PduReader:
    """The PDUs of one association, read through one buffer.

    Why: a C-STORE of a small instance is two or three PDUs (command, data set), and
    reading each header and body with a recv of its own, each behind a timeout change
    and the poll a timed socket makes, was a good part of the system time per
    instance. One recv here takes whatever has arrived, often a whole message. The
    deadlines are :func:`read_pdu`'s: the first byte of a PDU within ``idle_s``, the
    rest within ``pdu_s`` of it; the socket's timeout stays ``idle_s`` unless a PDU
    runs close to its deadline.
    """

    CAPACITY = 256 * 1024  # larger PDUs get a buffer of their own

    def __init__(self, sock: socket.socket, limit: int, deadlines: Deadlines) -> None:
        self.sock = sock
        self.limit = limit
        self.deadlines = deadlines
        self._buffer = bytearray(self.CAPACITY)
        self._view = memoryview(self._buffer)
        self._start = self._end = 0  # the bytes received and not yet returned
        sock.settimeout(deadlines.idle_s)

    def read(self) -> tuple[int, memoryview]:
        """The next PDU: (type, its bytes including the 6-byte header), valid until the
        next call (it may lie in the shared buffer)."""
        until: float | None = None
        if self._end - self._start < 6:
            until = self._fill(6, None)
        pdu_type, _, length = struct.unpack_from(">BBL", self._buffer, self._start)
        if length > self.limit:
            raise ProtocolError(f"PDU of {length} bytes exceeds the limit of {self.limit}")
        size = 6 + length
        if size > self.CAPACITY:
            return pdu_type, self._read_large(size, until)
        if self._end - self._start < size:
            self._fill(size, until)
        at = self._start
        self._start += size
        return pdu_type, self._view[at : at + size]

    def _fill(self, wanted: int, until: float | None) -> float:
        """Receive until ``wanted`` bytes are buffered; returns the PDU's deadline."""
        if self._start == self._end:
            self._start = self._end = 0
        elif self.CAPACITY - self._start < wanted:
            kept = self._end - self._start
            self._buffer[:kept] = self._buffer[self._start : self._end]  # same size: no resize
            self._start, self._end = 0, kept
        while self._end - self._start < wanted:
            if until is not None:
                self._within(until)
            got = self.sock.recv_into(self._view[self._end :])
            if not got:
                raise ConnectionError("connection closed")
            self._end += got
            if until is None:  # the PDU's first byte came: the whole PDU by its deadline
                until = time.monotonic() + self.deadlines.pdu_s
        assert until is not None
        self._restore_timeout()
        return until

    def _read_large(self, size: int, until: float | None) -> memoryview:
        buffered = self._end - self._start
        pdu = bytearray(size)
        pdu[:buffered] = self._view[self._start : self._end]
        self._start = self._end = 0
        if until is None:
            until = time.monotonic() + self.deadlines.pdu_s
        pdu[buffered:] = recv_exactly(self.sock, size - buffered, until)
        self._restore_timeout()
        return memoryview(pdu)

    def _within(self, until: float) -> None:
        """A recv inside a PDU may wait only until its deadline."""
        left = until - time.monotonic()
        if left <= 0:
            raise TimeoutError("a PDU did not arrive whole before its deadline")
        if left < self.deadlines.idle_s:
            self.sock.settimeout(left)

    def _restore_timeout(self) -> None:
        if self.sock.gettimeout() != self.deadlines.idle_s:  # no system call
            self.sock.settimeout(self.deadlines.idle_s)


# -- association negotiation --------------------------------------------------------------
@dataclass(frozen=True)
class Offer:
    """What this fast path accepts: abstract syntax → transfer syntaxes we support."""

    syntaxes: dict[str, frozenset[str]]
    allowed_calling_aets: frozenset[str]
    # id(request) -> (request, max PDU, contexts, A-ASSOCIATE-AC): see accept().
    _accepted: dict[int, tuple[A_ASSOCIATE, int, list[PresentationContext], bytes]] = field(
        default_factory=dict, compare=False, repr=False
    )

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
        :func:`jip.store.dimse.handlers.on_association_requested`).
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

    def accept(self, request: A_ASSOCIATE, max_pdu: int) -> tuple[list[PresentationContext], bytes]:
        """:meth:`negotiate` and :func:`accept_pdu`, once per request primitive.

        :func:`decode_request` hands out one primitive per distinct request, so a
        sender's next association is answered from here (~6 ms of CPU saved each for
        storescu's ~120 contexts, measured). Both results are only read by callers.
        The entry holds its request, so its id cannot be reused while it is here.
        """
        entry = self._accepted.get(id(request))
        if entry is not None and entry[0] is request and entry[1] == max_pdu:
            return entry[2], entry[3]
        contexts = self.negotiate(request)
        pdu = accept_pdu(request, contexts, max_pdu)
        if len(self._accepted) >= _ACCEPTED_KEPT:
            self._accepted.clear()
        self._accepted[id(request)] = (request, max_pdu, contexts, pdu)
        return contexts, pdu


_ACCEPTED_KEPT = 32  # as many as decode_request keeps


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
    """The A-ASSOCIATE-RQ primitive of ``raw``; callers only read it, never change it.

    Decoded once per distinct request: a sender's associations propose the same
    contexts each time, and pynetdicom's decoding of storescu's ~120 of them costs
    ~8 ms of CPU (measured), per association.
    """
    return _decode_request(bytes(raw))


@functools.lru_cache(maxsize=_ACCEPTED_KEPT)
def _decode_request(raw: bytes) -> A_ASSOCIATE:
    pdu = A_ASSOCIATE_RQ()
    pdu.decode(raw)
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
        elif tag in (AFFECTED_SOP_CLASS, AFFECTED_SOP_INSTANCE):
            command[tag] = value.rstrip(b"\0 ").decode("ascii", "replace")
    if at != end:
        raise ProtocolError("command set ends inside an element header")
    return command


def _element(tag: int, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\0" if tag in (AFFECTED_SOP_CLASS, AFFECTED_SOP_INSTANCE) else b" "
    return struct.pack("<HHL", tag >> 16, tag & 0xFFFF, len(value)) + value


def encode_response(
    command_field: int,
    message_id: int,
    status: int,
    sop_class: str,
    sop_instance: str | None = None,
    comment: str | None = None,
    offending: tuple[int, ...] = (),
) -> bytes:
    """A response command set with its group length, elements in tag order."""
    elements = [
        _element(AFFECTED_SOP_CLASS, sop_class.encode("ascii")),
        _element(COMMAND_FIELD, struct.pack("<H", command_field)),
        _element(MESSAGE_ID_RESPONDED, struct.pack("<H", message_id)),
        _element(DATA_SET_TYPE, struct.pack("<H", NO_DATA_SET)),
        _element(STATUS, struct.pack("<H", status)),
    ]
    if offending:
        tags = b"".join(struct.pack("<HH", tag >> 16, tag & 0xFFFF) for tag in offending)
        elements.append(_element(OFFENDING_ELEMENT, tags))
    if comment:
        elements.append(_element(ERROR_COMMENT, error_comment(comment).encode("ascii", "replace")))
    if sop_instance:
        elements.append(_element(AFFECTED_SOP_INSTANCE, sop_instance.encode("ascii")))
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


def storage_offer(
    supported: Collection[PresentationContext], allowed_calling_aets: Collection[str]
) -> Offer:
    """The fast path's offer: the AE's storage and verification contexts."""
    syntaxes = {
        str(cx.abstract_syntax): frozenset(str(ts) for ts in cx.transfer_syntax)
        for cx in supported
        if str(cx.abstract_syntax) in _STORAGE_OR_VERIFICATION
    }
    return Offer(syntaxes, frozenset(a.strip() for a in allowed_calling_aets))


# pynetdicom's list of storage SOP classes (not all live under 1.2.840.10008.5.1.4.1.1),
# the one the AE's storage contexts are built from, and Verification.
_STORAGE_OR_VERIFICATION = frozenset(
    [str(cx.abstract_syntax) for cx in AllStoragePresentationContexts] + [VERIFICATION]
)
