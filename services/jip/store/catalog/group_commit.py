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


class GroupCommitter(Generic[Item, Result]):
    """Runs ``commit(batch)`` for batches of submitted items, on the submitting threads."""

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
        self._pending: deque[tuple[Item, Future[Result]]] = deque()
        self._changed = threading.Condition()

    def submit(self, item: Item) -> Result:
        """Commit ``item`` (with whatever else is pending) and return its result."""
        future: Future[Result] = Future()
        with self._changed:
            if self._closed:
                raise RuntimeError("the catalog writer is closed")
            self._pending.append((item, future))
            while not future.done():
                if self._committing:
                    self._changed.wait()
                    continue
                self._committing = True
                self._changed.release()
                try:
                    with self._gate():
                        with self._changed:  # what arrived while the gate was shut too
                            count = min(len(self._pending), self._max_batch)
                            batch = [self._pending.popleft() for _ in range(count)]
                        self._commit_batch(batch)
                finally:
                    self._changed.acquire()
                    self._committing = False
                    self._changed.notify_all()
        return future.result()

    def pending(self) -> int:
        """How many submitted items wait for a commit to finish."""
        with self._changed:
            return len(self._pending)

    def close(self) -> None:
        """Refuse new items; return once everything submitted is committed."""
        with self._changed:
            self._closed = True
            while self._committing or self._pending:
                self._changed.wait()

    def _commit_batch(self, batch: list[tuple[Item, Future[Result]]]) -> None:
        try:
            results = self._commit([item for item, _ in batch])
        except BaseException as exc:  # every waiter learns why its row is not durable
            self._failed(batch, exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            future.set_result(result)

    def _failed(self, batch: list[tuple[Item, Future[Result]]], exc: BaseException) -> None:
        if len(batch) > 1:
            # One bad row must not fail the other senders' rows: commit each alone.
            for entry in batch:
                self._commit_batch([entry])
            return
        batch[0][1].set_exception(exc)


class SharedFlush(GroupCommitter[Item, Result]):
    """A group commit that succeeds or fails as a whole: one fsync for many files.

    A failed flush is never retried, alone or together: after a failed fsync the
    kernel may report the same pages clean although they never reached the disk, so
    every member of the batch learns of the failure.
    """

    def _failed(self, batch: list[tuple[Item, Future[Result]]], exc: BaseException) -> None:
        for _, future in batch:
            future.set_exception(exc)
