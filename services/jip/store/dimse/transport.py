"""Transport events of every association: TCP_NODELAY and the transfer syntax choice.

Handlers of pynetdicom events that concern the connection and the negotiation, not a
DIMSE service; :mod:`jip.store.dimse.ae` wires them (the accepted sockets of the fast
path get ``TCP_NODELAY`` in its request handler).
"""

from __future__ import annotations

import socket

from pydicom.uid import UID
from pynetdicom.events import Event
from pynetdicom.presentation import PresentationContext


def set_no_delay(sock: socket.socket | None) -> None:
    """Disable Nagle's algorithm (see jip.store.dimse.ae: a C-STORE is two writes)."""
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def on_connection_open(event: Event) -> None:
    """EVT_CONN_OPEN of our requestor associations: TCP_NODELAY before the first PDU.

    Accepted sockets get it in ``jip.store.dimse.ae._RequestHandler.handle``.
    """
    sock = event.assoc.dul.socket
    set_no_delay(sock.socket if sock is not None else None)


def on_association_requested(event: Event) -> None:
    """EVT_REQUESTED: take the requestor's preferred transfer syntax where we can.

    PS3.8 §9.3.2.2 leaves the choice among proposed syntaxes to the acceptor, and
    pynetdicom picks by the acceptor's order. A sender that proposes a compressed
    syntax first, with uncompressed ones as fallback in the same context, wants to send
    its file as it is; taking the fallback would make it decompress (or fail, as
    storescu does for JPEG 2000). So for this association each supported context lists
    first the syntaxes the requestor proposed, in its order.
    """
    assoc = event.assoc
    primitive = assoc.requestor.primitive
    if primitive is None:
        return
    preferred: dict[str, list[str]] = {}
    for context in primitive.presentation_context_definition_list:
        order = preferred.setdefault(str(context.abstract_syntax), [])
        order += [str(ts) for ts in context.transfer_syntax if str(ts) not in order]
    assoc.acceptor.supported_contexts = [
        _in_order(cx, tuple(preferred[str(cx.abstract_syntax)]))
        if str(cx.abstract_syntax) in preferred
        else cx
        for cx in assoc.acceptor.supported_contexts
    ]


# Reordered contexts, reused: a process serves one AE, so the supported context of an
# abstract syntax is always the same, and negotiation only reads them. Building ~120
# of them per association took ~30 ms.
_ORDERED: dict[tuple[str, tuple[str, ...]], PresentationContext] = {}


def _in_order(supported: PresentationContext, preferred: tuple[str, ...]) -> PresentationContext:
    key = (str(supported.abstract_syntax), preferred)
    if (context := _ORDERED.get(key)) is not None:
        return context
    ours = [str(ts) for ts in supported.transfer_syntax]
    context = PresentationContext()
    context.abstract_syntax = supported.abstract_syntax
    order: list[str | bytes | UID] = [ts for ts in preferred if ts in ours]
    context.transfer_syntax = order + [ts for ts in ours if ts not in preferred]
    context.scu_role, context.scp_role = supported.scu_role, supported.scp_role
    if len(_ORDERED) > 10_000:
        _ORDERED.clear()
    _ORDERED[key] = context
    return context
