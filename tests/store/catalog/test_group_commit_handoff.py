"""GroupCommitter's hand-off: a finished batch wakes its members and the next leader.

Waiters sleep on conditions of their own, so a batch's end must wake whoever commits
next: if it did not, items left over (beyond ``max_batch``, or arrived during the
batch) would wait forever.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence

import pytest

from jip.store.catalog import group_commit
from jip.store.catalog.group_commit import GroupCommitter


def test_items_beyond_a_batch_are_committed_by_the_next_leader() -> None:
    batches: list[list[int]] = []
    entered, release = threading.Event(), threading.Event()

    def commit(items: Sequence[int]) -> list[int]:
        batches.append(list(items))
        if len(batches) == 1:
            entered.set()
            release.wait(timeout=30)  # the other items queue up meanwhile
        return [item + 100 for item in items]

    committer: GroupCommitter[int, int] = GroupCommitter(commit, max_batch=2)
    results: dict[int, int] = {}

    def send(item: int) -> None:
        results[item] = committer.submit(item)

    first = threading.Thread(target=send, args=(0,))
    first.start()
    assert entered.wait(timeout=30)
    others = [threading.Thread(target=send, args=(item,)) for item in range(1, 8)]
    for thread in others:
        thread.start()
    while committer.pending() < 7:
        threading.Event().wait(0.01)
    release.set()
    for thread in [first, *others]:
        thread.join(timeout=30)
        assert not thread.is_alive(), "a waiter was never woken"
    committer.close()
    assert results == {item: item + 100 for item in range(8)}
    assert batches[0] == [0] and all(len(batch) <= 2 for batch in batches)
    assert sorted(item for batch in batches for item in batch) == list(range(8))


def test_a_waiter_is_woken_once_its_turn_comes_not_by_every_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Items queued behind a running batch are not all woken by its end: the next
    leader is, and each member of a batch once it is committed."""
    wakeups: list[str] = []

    class CountingCondition(threading.Condition):
        def wait(self, timeout: float | None = None) -> bool:
            woken = super().wait(timeout)
            wakeups.append(threading.current_thread().name)
            return woken

    class CountingEntry(group_commit._Entry[int, int]):
        def __init__(self, item: int, lock: threading.Lock) -> None:
            super().__init__(item, lock)
            self.turn = CountingCondition(lock)

    monkeypatch.setattr(group_commit, "_Entry", CountingEntry)
    entered, release = threading.Event(), threading.Event()
    calls = 0

    def commit(items: Sequence[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            entered.set()
            release.wait(timeout=30)
        return list(items)

    committer: GroupCommitter[int, int] = GroupCommitter(commit, max_batch=1)
    threads = [threading.Thread(target=committer.submit, args=(i,)) for i in range(4)]
    queue_behind_the_first(committer, threads, entered, release, pending=3)
    assert calls == 4
    # Batches of one: each queued thread is woken once, to commit its own item; with
    # every waiter woken after each batch the three would wake 3 + 2 + 1 times.
    assert sorted(wakeups) == sorted(thread.name for thread in threads[1:])


def test_a_failed_gate_withdraws_its_item_and_hands_on_to_the_next_waiter() -> None:
    """The caller learns of the failure; its item is never committed behind its back,
    and the items that waited meanwhile are still committed."""
    gate_entered, release = threading.Event(), threading.Event()
    calls = 0

    @contextlib.contextmanager
    def gate() -> Iterator[None]:
        nonlocal calls
        calls += 1
        if calls == 1:
            gate_entered.set()
            release.wait(timeout=30)
            raise OSError(37, "No locks available")
        yield

    committed: list[int] = []

    def commit(items: Sequence[int]) -> list[int]:
        committed.extend(items)
        return list(items)

    committer: GroupCommitter[int, int] = GroupCommitter(commit, gate=gate)
    failure: list[BaseException] = []

    def first() -> None:
        try:
            committer.submit(1)
        except OSError as exc:
            failure.append(exc)

    threads = [threading.Thread(target=first)]
    threads += [threading.Thread(target=committer.submit, args=(n,)) for n in (2, 3)]
    queue_behind_the_first(committer, threads, gate_entered, release, pending=3)
    assert len(failure) == 1
    assert sorted(committed) == [2, 3]


def queue_behind_the_first(
    committer: GroupCommitter[int, int],
    threads: list[threading.Thread],
    entered: threading.Event,
    release: threading.Event,
    pending: int,
) -> None:
    """Start the first thread and wait until it holds the commit (``entered``), queue
    the others behind it until ``pending`` items wait, let it go (``release``), then
    join them all and close."""
    threads[0].start()
    assert entered.wait(timeout=30)
    for thread in threads[1:]:
        thread.start()
    while committer.pending() < pending:
        threading.Event().wait(0.01)
    release.set()
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive(), "a waiter was never woken"
    committer.close()
