"""One ingest writer at a time across listener processes, without SQLite's sleeps.

Each listener process group-commits its own rows (:mod:`jip.store.catalog.group_commit`),
and on SQLite the processes' transactions then meet at the database's single write
lock. SQLite waits for that lock by sleeping (1, 2, 5, 10, … 100 ms between tries), so
a process that finds the other one committing sleeps well past the moment the lock is
free: with four or more concurrent senders that sleep made the slowest 1 % of C-STOREs
several times slower than the median. An advisory ``flock`` on a file beside the
database is waited for in the kernel, which wakes the waiter the moment it is released;
the waiter's batch then holds every row that arrived meanwhile. PostgreSQL queues its
writers itself, and needs none.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)


class WriteLock:
    """An exclusive lock for the ingest's catalog transactions (a no-op off SQLite)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._fd: int | None = None
        self._opened = threading.Lock()

    @classmethod
    def for_engine(cls, engine: Engine) -> WriteLock:
        """The lock file of a file-backed SQLite database, ``<database>.write-lock``."""
        database = engine.url.database
        if engine.dialect.name != "sqlite" or not database or database == ":memory:":
            return cls(None)
        if database.startswith("file:"):
            return cls(None)
        return cls(Path(f"{database}.write-lock"))

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Hold the lock for the ``with`` block (waits for other processes' holders)."""
        fd = self._descriptor()
        if fd is None:
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:  # e.g. ENOLCK on a network mount: SQLite's lock still holds
            log.warning("catalog write lock not taken", extra={"error": exc.strerror})
            yield
            return
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def _descriptor(self) -> int | None:
        if self.path is None:
            return None
        with self._opened:
            if self._fd is None:
                try:
                    # 0600 like the database itself; the file only ever stays empty.
                    self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                except OSError as exc:
                    # SQLite's own lock still keeps writers apart, only with its sleeps.
                    log.warning(
                        "catalog write lock unavailable; SQLite's busy wait serialises writers",
                        extra={"path": str(self.path), "error": exc.strerror},
                    )
                    self.path = None
            return self._fd

    def close(self) -> None:
        with self._opened:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
