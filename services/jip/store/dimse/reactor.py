"""Event-driven waits for pynetdicom's threads (the associations it still serves).

pynetdicom's DUL thread polls its socket and sleeps 1 ms whenever nothing happened,
and the acceptor's reactor sleeps 1 ms before each look at the message queue. On a
busy machine every such sleep costs a trip through the scheduler, several per
C-STORE. Here the DUL thread waits in select() on the socket and on a wake-up
socket that every queued outgoing primitive writes to, and the reactor waits on its
message queue; both still wake every few ms to check pynetdicom's timers.
"""

from __future__ import annotations

import contextlib
import queue
import select
import socket
import ssl
import threading
import time
from typing import Any

from pynetdicom.association import Association
from pynetdicom.transport import AssociationSocket

_WAIT_S = 0.005


class _WakingQueue(queue.Queue[Any]):
    """The DUL's outgoing queue: a put also wakes the DUL thread out of select()."""

    def __init__(self, wake: socket.socket) -> None:
        super().__init__()
        self._wake = wake

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        with contextlib.suppress(OSError):  # full buffer: a wake-up is pending anyway
            self._wake.send(b"\0")


class _WaitingQueue(queue.Queue[Any]):
    """The DIMSE message queue: a non-blocking get waits briefly for a message."""

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        if not block:
            return super().get(True, _WAIT_S)
        return super().get(block, timeout)


class _ResponsesForSenders(queue.Queue[Any]):
    """A requestor's DIMSE message queue, which its own reactor thread never reads.

    pynetdicom's pause of the reactor around ``send_*`` has a gap: the reactor may
    already be past its checkpoint, between turns, when the sender sees it "paused";
    preempted there (the GIL hands over every few ms), it wakes to find the response and
    serves it as an unexpected request, and the sender times out. A fast peer (our own
    storage fast path answers in about a millisecond) hits that gap. Our requestor
    associations only send requests and read their responses in ``send_*`` (C-GET's
    incoming C-STOREs included), so the reactor has nothing to take.
    """

    def __init__(self, owner: Association) -> None:
        super().__init__()
        self._owner = owner

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        if threading.current_thread() is self._owner:
            raise queue.Empty
        return super().get(block, timeout)


class WaitingSocket(AssociationSocket):
    """An association socket whose readiness check waits for data or a wake-up."""

    _wake: socket.socket
    _pending: bytes = b""  # read by the fast path before handing over (see handle())
    # An accepted association's deadline for each read pynetdicom asks for (a PDU's
    # header, then its body): a peer trickling bytes is dropped (TimeoutError ->
    # pynetdicom's "transport closed"). None for our own requestor associations.
    pdu_timeout_s: float | None = None

    @property
    def ready(self) -> bool:
        sock = self.socket
        if sock is None or not self._is_connected:
            return False
        if self._pending:
            return True
        try:
            readable, _, _ = select.select([sock, self._wake], [], [], _WAIT_S)
        except (OSError, ValueError):
            self.event_queue.put("Evt17")  # transport closed
            return False
        if self._wake in readable:
            with contextlib.suppress(OSError):
                self._wake.recv(4096)
        pending = isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
        return sock in readable or pending

    def recv(self, nr_bytes: int) -> bytearray:
        """Read ``nr_bytes`` straight into one buffer (pynetdicom reads 4 KiB at a time).

        Returns fewer bytes only when the peer closed the connection, as pynetdicom's.
        """
        sock = self.socket
        assert sock is not None
        buffer = bytearray(nr_bytes)
        view = memoryview(buffer)
        done = min(nr_bytes, len(self._pending))
        buffer[:done], self._pending = self._pending[:done], self._pending[done:]
        deadline = None if self.pdu_timeout_s is None else time.monotonic() + self.pdu_timeout_s
        idle = sock.gettimeout()
        try:
            while done < nr_bytes:
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError(f"{done} of {nr_bytes} bytes before the deadline")
                    sock.settimeout(left if idle is None else min(idle, left))
                count = sock.recv_into(view[done:], nr_bytes - done)
                if not count:
                    del view
                    return buffer[:done]
                done += count
        finally:
            if deadline is not None:
                sock.settimeout(idle)
        return buffer

    def has_data(self) -> bool:
        """Whether the peer sent something not yet read, without waiting."""
        sock = self.socket
        if self._pending:
            return True
        if sock is None or not self._is_connected:
            return False
        try:
            readable, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):
            return False
        return bool(readable)

    def close(self) -> None:
        super().close()
        for wake in getattr(self, "_wake_pair", ()):
            wake.close()


def _read_before_sending(dul: Any, sock: AssociationSocket) -> None:
    """Let the DUL read what the peer sent before it sends the next primitive.

    pynetdicom's DUL sends while it has anything to send and reads only when idle, so a
    C-CANCEL (PS3.7 §9.3.2.3) arriving while a C-FIND streams its pending responses is
    read after the last of them, when there is nothing left to cancel. Reading first
    costs one select() per outgoing primitive.
    """
    send = dul._process_recv_primitive

    def read_first() -> bool:
        if isinstance(sock, WaitingSocket) and sock.has_data():
            return False  # this turn of the DUL reads the waiting PDU instead
        return bool(send())

    dul._process_recv_primitive = read_first


def make_event_driven(assoc: Association, sock: AssociationSocket) -> None:
    """Install the waking queues and socket on a not yet started association.

    Only an acceptor's reactor waits on its message queue: a requestor's send_* methods
    take their responses from that queue themselves, and its reactor must not take them
    (:class:`_ResponsesForSenders`).
    An acceptor only sends requests (C-GET sub-operations) from its reactor thread.
    """
    dul = assoc.dul
    wake_reader, wake_writer = socket.socketpair()
    wake_reader.setblocking(False)
    wake_writer.setblocking(False)
    dul._run_loop_delay = 0
    dul.to_provider_queue = _WakingQueue(wake_writer)
    if assoc.is_acceptor:
        assoc.dimse.msg_queue = _WaitingQueue()
        _read_before_sending(dul, sock)
    else:
        assoc.dimse.msg_queue = _ResponsesForSenders(assoc)
    sock.__class__ = WaitingSocket
    sock._wake = wake_reader  # type: ignore[attr-defined]
    sock._wake_pair = (wake_reader, wake_writer)  # type: ignore[attr-defined]
