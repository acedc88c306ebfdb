"""The ingest's cross-process catalog write lock and the group committer's gate."""

from __future__ import annotations

import fcntl
import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from jip.db import make_engine
from jip.store.catalog.add import CatalogWriter, DuplicatePolicy
from jip.store.catalog.group_commit import GroupCommitter
from jip.store.catalog.write_lock import WriteLock

SERVICES = Path(__file__).resolve().parents[3] / "services"

HOLDER = """
import sys
from pathlib import Path
from jip.store.catalog.write_lock import WriteLock
with WriteLock(Path(sys.argv[1])).held():
    print("held", flush=True)
    sys.stdin.readline()
"""


def _is_locked(path: Path) -> bool:
    """Whether another open file description holds ``path``'s flock."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def test_the_write_lock_keeps_another_process_out_until_released(tmp_path: Path) -> None:
    path = tmp_path / "catalog.db.write-lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(SERVICES)},
    )
    assert holder.stdout is not None and holder.stdin is not None
    try:
        assert holder.stdout.readline().strip() == "held"
        assert _is_locked(path)
        holder.stdin.write("release\n")
        holder.stdin.flush()
        assert holder.wait(timeout=30) == 0
    finally:
        holder.kill()
    ours = WriteLock(path)
    with ours.held():
        assert _is_locked(path)
    assert not _is_locked(path)
    ours.close()


def test_the_write_lock_file_sits_beside_a_sqlite_catalog_and_is_private(
    tmp_path: Path,
) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'catalog.db'}")
    lock = WriteLock.for_engine(engine)
    assert lock.path == tmp_path / "catalog.db.write-lock"
    with lock.held():
        pass
    assert stat.S_IMODE(lock.path.stat().st_mode) == 0o600
    lock.close()
    engine.dispose()


def test_an_in_memory_catalog_needs_no_write_lock() -> None:
    engine = make_engine("sqlite://")
    lock = WriteLock.for_engine(engine)
    assert lock.path is None
    with lock.held():  # nothing to wait for
        pass
    engine.dispose()


def test_an_unusable_lock_file_leaves_writes_to_sqlite_s_own_lock(tmp_path: Path) -> None:
    lock = WriteLock(tmp_path / "missing-folder" / "catalog.db.write-lock")
    with lock.held():
        pass
    assert lock.path is None


def test_the_catalog_writer_gates_on_the_write_lock(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'catalog.db'}")
    writer = CatalogWriter(engine, DuplicatePolicy.KEEP_FIRST, "default")
    with writer.exclusive():
        assert _is_locked(tmp_path / "catalog.db.write-lock")
    writer.close()
    engine.dispose()


def test_rows_that_arrive_while_the_gate_is_shut_join_the_next_batch() -> None:
    """Another process committing (the gate shut) does not make each row wait its turn."""
    shut = threading.Lock()
    entering = threading.Event()

    @contextmanager
    def gate() -> Iterator[None]:
        entering.set()
        with shut:
            yield

    batches: list[list[int]] = []

    def commit(items: Sequence[int]) -> list[int]:
        batches.append(list(items))
        return [item * 10 for item in items]

    committer: GroupCommitter[int, int] = GroupCommitter(commit, gate=gate)
    results: dict[int, int] = {}

    def send(item: int) -> None:
        results[item] = committer.submit(item)

    shut.acquire()
    senders = [threading.Thread(target=send, args=(item,)) for item in (1, 2, 3)]
    senders[0].start()
    assert entering.wait(timeout=30)  # the first sender leads, and waits at the gate
    for sender in senders[1:]:
        sender.start()
    deadline = time.monotonic() + 30
    while committer.pending() < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    shut.release()
    for sender in senders:
        sender.join(timeout=60)
    committer.close()
    assert batches == [[1, 2, 3]]
    assert results == {1: 10, 2: 20, 3: 30}


def test_a_failed_commit_behind_the_gate_reaches_its_sender() -> None:
    opened: list[bool] = []

    @contextmanager
    def gate() -> Iterator[None]:
        opened.append(True)
        yield

    def commit(items: Sequence[int]) -> list[int]:
        raise ValueError("bad row")

    committer: GroupCommitter[int, int] = GroupCommitter(commit, gate=gate)
    with pytest.raises(ValueError, match="bad row"):
        committer.submit(1)
    committer.close()  # returns: nothing is left pending
    assert opened == [True]
