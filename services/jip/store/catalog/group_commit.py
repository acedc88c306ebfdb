"""Group commit: one catalog transaction for every instance that arrived meanwhile.

Each association thread submits its row. When no commit is running, the submitting
thread commits at once, itself; rows submitted while a commit runs wait, and the first
of them to wake commits all of them in one transaction. A lone sender thus pays no
hand-off to another thread, and concurrent senders share commits (and fsyncs) instead
of queueing for the database lock.

A ``gate`` (the catalog's cross-process write lock, :mod:`jip.store.catalog.write_lock`)
is entered before the batch is taken: rows that arrive while another process commits
join the batch that follows it.

:class:`SharedFlush` is the same hand-off for the blobs' fsyncs, which the ingest runs
before the catalog's: a batch there is flushed, or failed, as a whole.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from contextlib import AbstractContextManager
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class _Entry(Generic[Item, Result]):
    """A submitted item, its result, and the condition its own thread waits on."""

    __slots__ = ("future", "item", "turn")

    def __init__(self, item: Item, lock: threading.Lock) -> None:
        self.item = item
        self.future: Future[Result] = Future()
        self.turn = threading.Condition(lock)


class GroupCommitter(Generic[Item, Result]):
    """Runs ``commit(batch)`` for batches of submitted items, on the submitting threads.

    Each waiting thread sleeps on a condition of its own: a finished batch wakes its
    members and the one thread that commits next, not every waiter (with many senders
    the waiters not served yet woke and went back to sleep after every batch).
    """

    def __init__(
        self,
        commit: Callable[[Sequence[Item]], list[Result]],
        max_batch: int = 256,
        gate: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext,
    ):
        self._commit = commit
        self._gate = gate
        self._max_batch = max_batch
        self._closed = False
        self._committing = False
        self._lock = threading.Lock()
        self._pending: deque[_Entry[Item, Result]] = deque()
        self._idle = threading.Condition(self._lock)  # close() waits on it

    def submit(self, item: Item) -> Result:
        """Commit ``item`` (with whatever else is pending) and return its result."""
        entry: _Entry[Item, Result] = _Entry(item, self._lock)
        with self._lock:
            if self._closed:
                raise RuntimeError("the catalog writer is closed")
            self._pending.append(entry)
            while not entry.future.done():
                if self._committing:
                    entry.turn.wait()
                    continue
                self._committing = True
                batch: list[_Entry[Item, Result]] = []
                self._lock.release()
                try:
                    with self._gate():
                        with self._lock:  # what arrived while the gate was shut too
                            count = min(len(self._pending), self._max_batch)
                            batch = [self._pending.popleft() for _ in range(count)]
                        self._commit_batch(batch)
                except BaseException:  # the gate failed: this item is withdrawn, not left
                    with self._lock:  # for a later batch to commit after the caller failed
                        if entry in self._pending:
                            self._pending.remove(entry)
                    raise
                finally:
                    self._lock.acquire()
                    self._committing = False
                    self._wake(batch)
        return entry.future.result()

    def _wake(self, batch: list[_Entry[Item, Result]]) -> None:
        """After a batch (lock held): its members, and the first waiter left to lead."""
        for member in batch:
            member.turn.notify()
        if self._pending:
            self._pending[0].turn.notify()
        self._idle.notify_all()

    def pending(self) -> int:
        """How many submitted items wait for a commit to finish."""
        with self._lock:
            return len(self._pending)

    def close(self) -> None:
        """Refuse new items; return once everything submitted is committed."""
        with self._lock:
            self._closed = True
            while self._committing or self._pending:
                self._idle.wait()

    def _commit_batch(self, batch: list[_Entry[Item, Result]]) -> None:
        try:
            results = self._commit([entry.item for entry in batch])
        except BaseException as exc:  # every waiter learns why its row is not durable
            self._failed(batch, exc)
            return
        for entry, result in zip(batch, results, strict=True):
            entry.future.set_result(result)

    def _failed(self, batch: list[_Entry[Item, Result]], exc: BaseException) -> None:
        if len(batch) > 1:
            # One bad row must not fail the other senders' rows: commit each alone.
            for entry in batch:
                self._commit_batch([entry])
            return
        batch[0].future.set_exception(exc)


class SharedFlush(GroupCommitter[Item, Result]):
    """A group commit that succeeds or fails as a whole: one fsync for many files.

    A failed flush is never retried, alone or together: after a failed fsync the
    kernel may report the same pages clean although they never reached the disk, so
    every member of the batch learns of the failure.
    """

    def _failed(self, batch: list[_Entry[Item, Result]], exc: BaseException) -> None:
        for entry in batch:
            entry.future.set_exception(exc)
