"""Association limits per IP address and per calling AE title, counted before the request.

A peer that opens connections and never finishes them (or a misconfigured modality
retrying in a loop) must not take every association the listener serves. So a
connection is counted against its address when it is accepted, before a byte of it is
read, and against its calling AE title as soon as the A-ASSOCIATE-RQ is read, before
pynetdicom or the fast path processes it. A connection over a limit gets an
A-ASSOCIATE-RJ "rejected-transient, local limit exceeded" (PS3.8 §9.3.4), which a
well-behaved sender answers by retrying later. Counts are per listener process, as
``store.max_associations`` is.

A flood over the address limit could still cost a thread per connection while its
request is read for the polite rejection; past :data:`_REJECTING_MAX` such connections
at once, the rest are closed without a word.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

_REJECTING_MAX = 16


@dataclass
class Ticket:
    """One accepted connection's place in the counts; released exactly once."""

    address: str
    admitted: bool
    ae_title: str | None = None
    accepted_at: float = field(default_factory=time.monotonic)
    _released: bool = field(default=False, repr=False)


class Admission:
    """Counts the associations in progress per address and per calling AE title."""

    def __init__(self, *, per_address: int, per_ae: int) -> None:
        self.per_address = per_address
        self.per_ae = per_ae
        self._by_address: Counter[str] = Counter()
        self._by_ae: Counter[str] = Counter()
        self._rejecting = 0
        self._lock = threading.Lock()

    def enter(self, address: str) -> Ticket | None:
        """At accept: a ticket (admitted or to be rejected), or None to close at once."""
        with self._lock:
            if self._by_address[address] < self.per_address:
                self._by_address[address] += 1
                return Ticket(address, admitted=True)
            if self._rejecting >= _REJECTING_MAX:
                return None
            self._rejecting += 1
        log.warning(
            "association limit per address reached",
            extra={"address": address, "limit": self.per_address},
        )
        return Ticket(address, admitted=False)

    def name(self, ticket: Ticket, ae_title: str) -> bool:
        """Count an admitted ticket against its calling AE title; False if over the limit."""
        title = ae_title.strip()
        with self._lock:
            if self._by_ae[title] >= self.per_ae:
                over = True
            else:
                over = False
                self._by_ae[title] += 1
                ticket.ae_title = title
        if over:
            log.warning(
                "association limit per calling AE reached",
                extra={"calling_ae": title, "limit": self.per_ae},
            )
        return not over

    def release(self, ticket: Ticket) -> None:
        with self._lock:
            if ticket._released:
                return
            ticket._released = True
            if not ticket.admitted:
                self._rejecting -= 1
                return
            _decrement(self._by_address, ticket.address)
            if ticket.ae_title is not None:
                _decrement(self._by_ae, ticket.ae_title)

    def counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """(per address, per AE title) now: for tests and the status page."""
        with self._lock:
            return dict(self._by_address), dict(self._by_ae)


def _decrement(counter: Counter[str], key: str) -> None:
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]
