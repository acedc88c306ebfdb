"""One storage association of the fast path, served on the connection's own thread.

Read a PDU, collect the data set fragments, ingest, answer: the loop
:mod:`jip.store.dimse.fast_path` runs for each association it takes. Wire formats and
negotiation are in :mod:`jip.store.dimse.pdu`.

A data set up to :data:`IN_MEMORY_LIMIT` is collected in memory and handed to the
ingest as bytes, which writes them once, where they stay (no spool file, nothing read
back for the header or the digest); a larger one goes to a Part 10 spool file as it
arrives (memory stays flat for a 500 MB instance), which the ingest moves into place.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
import os
import socket
import struct
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pynetdicom.pdu_primitives import A_ASSOCIATE

from jip.store.dimse.access import Caller
from jip.store.dimse.pdu import (
    A_ABORT_NOT_SPECIFIED,
    A_ABORT_TYPE,
    A_ABORT_UNEXPECTED,
    A_RELEASE_RP,
    A_RELEASE_RQ_TYPE,
    AFFECTED_SOP_CLASS,
    AFFECTED_SOP_INSTANCE,
    C_CANCEL_RQ,
    C_ECHO_RQ,
    C_ECHO_RSP,
    C_STORE_RQ,
    C_STORE_RSP,
    COMMAND_FIELD,
    DATA_SET_TYPE,
    MESSAGE_ID,
    NO_DATA_SET,
    P_DATA_TF_TYPE,
    PDU_LIMIT_FACTOR,
    Deadlines,
    Offer,
    PduReader,
    ProtocolError,
    decode_command,
    encode_response,
    file_meta,
    p_data_pdu,
)
from jip.store.dimse.status import GeneralStatus, StorageStatus
from jip.store.dimse.storage_service import StoreHandler, StoreRequest

log = logging.getLogger(__name__)

IN_MEMORY_LIMIT = 1024 * 1024  # bytes of a Part 10 file collected before it is spooled


@dataclass
class _Incoming:
    """The message being received: its command, then its Part 10 file, in memory
    (``data``) until it outgrows :data:`IN_MEMORY_LIMIT`, then in ``spool``."""

    context_id: int
    command: bytearray
    fields: dict[int, int | str] | None = None
    data: bytearray | None = None
    spool: BinaryIO | None = None
    path: Path | None = None
    # Why the data set can't be kept (no disk space for the spool file): its remaining
    # fragments are read and dropped, then the C-STORE is answered Out of Resources.
    refused: str | None = None


class StoreSession:
    """One storage association, served on the connection's own thread."""

    def __init__(
        self,
        sock: socket.socket,
        request: A_ASSOCIATE,
        offer: Offer,
        store: StoreHandler,
        caller: Caller,
        *,
        max_pdu: int,
        deadlines: Deadlines,
    ) -> None:
        self.sock = sock
        self.request = request
        self.offer = offer
        self.store = store
        self.caller = caller
        self.max_pdu = max_pdu
        self.deadlines = deadlines
        self.calling_ae = str(request.calling_ae_title).strip()
        self.contexts: dict[int, tuple[str, str]] = {}  # id -> (abstract, transfer syntax)
        self._stopping = threading.Event()
        self._incoming: _Incoming | None = None

    def run(self) -> None:
        """Accept, then serve messages until release, abort or a broken connection."""
        contexts, accept = self.offer.accept(self.request, self.max_pdu)
        self.contexts = {
            int(cx.context_id): (str(cx.abstract_syntax), str(cx.transfer_syntax[0]))
            for cx in contexts
            if cx.result == 0x00 and cx.context_id is not None
        }
        self.sock.settimeout(self.deadlines.idle_s)
        try:
            self.sock.sendall(accept)
            self._serve()
        except ProtocolError as exc:
            log.warning("aborting association", extra={"peer": self.calling_ae, "error": str(exc)})
            self.send_quietly(A_ABORT_UNEXPECTED)
        except TimeoutError:
            log.warning("association timed out", extra={"peer": self.calling_ae})
            self.send_quietly(A_ABORT_NOT_SPECIFIED)
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
        self.send_quietly(A_ABORT_NOT_SPECIFIED)
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def _serve(self) -> None:
        reader = PduReader(self.sock, self.max_pdu * PDU_LIMIT_FACTOR + 6, self.deadlines)
        while True:
            pdu_type, pdu = reader.read()
            if pdu_type == P_DATA_TF_TYPE:
                self._p_data(pdu[6:])
            elif pdu_type == A_RELEASE_RQ_TYPE:
                if self._incoming is not None:
                    raise ProtocolError("release requested in the middle of a message")
                self.sock.sendall(A_RELEASE_RP)
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
        if (
            incoming is None
            or context_id != incoming.context_id
            or (incoming.data is None and incoming.spool is None and incoming.refused is None)
        ):
            raise ProtocolError("a data set fragment without a C-STORE command before it")
        if incoming.data is not None and len(incoming.data) + len(data) <= IN_MEMORY_LIMIT:
            incoming.data += data
        elif incoming.refused is None:
            try:
                _write_all(self._spool(incoming), data)
            except OSError as exc:
                self._refuse(incoming, exc)
        if is_last:
            self._store(incoming)

    def _command_complete(self, incoming: _Incoming) -> None:
        fields = incoming.fields = decode_command(incoming.command)
        field = fields.get(COMMAND_FIELD)
        has_data = fields.get(DATA_SET_TYPE, NO_DATA_SET) != NO_DATA_SET
        if field == C_ECHO_RQ and not has_data:
            self._incoming = None
            self._respond(incoming, C_ECHO_RSP, GeneralStatus.SUCCESS)
        elif field == C_CANCEL_RQ:
            self._incoming = None  # nothing to cancel: C-STORE and C-ECHO are answered at once
        elif field == C_STORE_RQ and has_data:
            incoming.data = bytearray(self._file_meta(incoming))
        else:
            raise ProtocolError(
                f"unsupported DIMSE command 0x{field or 0:04X} on a storage association"
            )

    def _file_meta(self, incoming: _Incoming) -> bytes:
        """A Part 10 file's start: preamble and file meta from the command."""
        assert incoming.fields is not None
        _, transfer_syntax = self.contexts[incoming.context_id]
        return file_meta(
            str(incoming.fields.get(AFFECTED_SOP_CLASS, "")),
            str(incoming.fields.get(AFFECTED_SOP_INSTANCE, "")),
            transfer_syntax,
            self.calling_ae,
        )

    def _spool(self, incoming: _Incoming) -> BinaryIO:
        """The message's spool file; made, with what was collected so far, when the
        data set outgrows :data:`IN_MEMORY_LIMIT`."""
        if incoming.spool is None:
            incoming.path, incoming.spool = _new_spool()
            collected, incoming.data = incoming.data, None
            if collected:
                _write_all(incoming.spool, collected)
        return incoming.spool

    def _refuse(self, incoming: _Incoming, exc: OSError) -> None:
        log.warning(
            "cannot spool a C-STORE data set", extra={"peer": self.calling_ae, "error": str(exc)}
        )
        incoming.refused = f"cannot keep the data set: {exc.strerror}; free disk space and retry"
        _drop_spool(incoming)

    def _store(self, incoming: _Incoming) -> None:
        self._incoming = None
        if incoming.spool is not None:
            try:
                incoming.spool.close()
                incoming.spool = None
            except OSError as exc:  # the last bytes did not fit
                self._refuse(incoming, exc)
        if incoming.refused is not None:
            self._respond(incoming, C_STORE_RSP, StorageStatus.OUT_OF_RESOURCES, incoming.refused)
            return
        assert incoming.fields is not None
        request = StoreRequest(
            incoming.path,
            str(incoming.fields.get(AFFECTED_SOP_CLASS, "")),
            str(incoming.fields.get(AFFECTED_SOP_INSTANCE, "")),
            None if incoming.data is None else bytes(incoming.data),
        )
        answer = self.store(self.caller, request)  # consumes the spool file
        self._respond(incoming, C_STORE_RSP, answer.status, answer.comment, answer.offending)

    def _respond(
        self,
        incoming: _Incoming,
        field: int,
        status: int,
        comment: str | None = None,
        offending: tuple[int, ...] = (),
    ) -> None:
        fields = incoming.fields or {}
        sop_class = str(fields.get(AFFECTED_SOP_CLASS) or self.contexts[incoming.context_id][0])
        instance = fields.get(AFFECTED_SOP_INSTANCE)
        command = encode_response(
            field,
            int(fields.get(MESSAGE_ID, 0)),
            status,
            sop_class,
            str(instance) if instance else None,
            comment,
            offending,
        )
        self.sock.sendall(p_data_pdu(incoming.context_id, command))

    def _discard_incoming(self) -> None:
        incoming, self._incoming = self._incoming, None
        if incoming is not None:
            _drop_spool(incoming)

    def send_quietly(self, pdu: bytes) -> None:
        """Send ``pdu`` if the connection still takes it (aborts, rejections)."""
        send_quietly(self.sock, pdu)


def send_quietly(sock: socket.socket, pdu: bytes) -> None:
    """Send ``pdu`` if the connection takes it within a few seconds."""
    with contextlib.suppress(OSError):
        sock.settimeout(5.0)
        sock.sendall(pdu)


def _drop_spool(incoming: _Incoming) -> None:
    """Close and remove the message's spool file, if it has one."""
    if incoming.path is not None:
        _remove_spool(incoming.path, incoming.spool)
    incoming.path = incoming.spool = incoming.data = None


def _remove_spool(path: Path, spool: BinaryIO | None) -> None:
    if spool is not None:
        with contextlib.suppress(OSError):  # a failed flush still closes the file
            spool.close()
    path.unlink(missing_ok=True)


_spool_names = itertools.count()  # unique in this process's own spool folder


def _new_spool() -> tuple[Path, BinaryIO]:
    """An empty, unbuffered spool file in the temp folder (the listener's spool folder,
    one per process): its first write is the collected bytes, or a whole PDU's."""
    folder = tempfile.gettempdir()
    while True:
        path = os.path.join(folder, f"{threading.get_native_id()}-{next(_spool_names)}.dcm")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:  # left by an earlier process with this pid
            continue
        return Path(path), io.FileIO(fd, "wb")


def _write_all(spool: BinaryIO, data: bytes | bytearray | memoryview) -> None:
    """Write every byte (an unbuffered file may take fewer at once)."""
    with memoryview(data) as view:
        written = 0
        while written < len(view):
            written += spool.write(view[written:]) or 0
