"""Group commit: one catalog transaction for every instance that arrived meanwhile.

Each association thread submits its row and waits; one writer thread commits whatever
queued up while the previous commit ran. A lone sender pays one commit per instance,
and concurrent senders share commits (and fsyncs) instead of queueing for the lock.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class GroupCommitter(Generic[Item, Result]):
    """Runs ``commit(batch)`` on a writer thread for batches of submitted items."""

    def __init__(self, commit: Callable[[Sequence[Item]], list[Result]], max_batch: int = 256):
        self._commit = commit
        self._max_batch = max_batch
        self._closed = False
        self._queue: queue.Queue[tuple[Item, Future[Result]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="catalog-writer", daemon=True)
        self._thread.start()

    def submit(self, item: Item) -> Result:
        """Queue ``item`` and wait until its batch is committed (or failed)."""
        if self._closed:
            raise RuntimeError("the catalog writer is closed")
        future: Future[Result] = Future()
        self._queue.put((item, future))
        return future.result()

    def close(self) -> None:
        """Commit what is queued, then stop the writer thread."""
        self._closed = True
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self._max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stopping = True
                    break
                batch.append(nxt)
            self._commit_batch(batch)

    def _commit_batch(self, batch: list[tuple[Item, Future[Result]]]) -> None:
        try:
            results = self._commit([item for item, _ in batch])
        except BaseException as exc:  # every waiter learns why its row is not durable
            if len(batch) > 1:
                # One bad row must not fail the other senders' rows: commit each alone.
                for entry in batch:
                    self._commit_batch([entry])
                return
            batch[0][1].set_exception(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            future.set_result(result)
