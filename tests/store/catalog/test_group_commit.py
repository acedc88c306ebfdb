"""SharedFlush: a group commit whose batch succeeds or fails as a whole.

(The catalog's own GroupCommitter, which commits a bad row's neighbours alone, is tested
in test_catalog.py and test_write_lock.py.)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest

from jip.store.catalog.group_commit import SharedFlush


def _hold_first_flush(
    fail_after_first: bool,
) -> tuple[SharedFlush[int, int], list[list[int]], threading.Event, threading.Event]:
    entered, release = threading.Event(), threading.Event()
    batches: list[list[int]] = []

    def flush(items: Sequence[int]) -> list[int]:
        batches.append(list(items))
        if len(batches) == 1:
            entered.set()
            release.wait(timeout=30)  # the next items queue up as one batch meanwhile
        elif fail_after_first:
            raise OSError(5, "Input/output error")
        return [item * 10 for item in items]

    return SharedFlush(flush), batches, entered, release


def _send_while_held(
    flusher: SharedFlush[int, int], entered: threading.Event, release: threading.Event
) -> dict[int, int | BaseException]:
    results: dict[int, int | BaseException] = {}

    def send(item: int) -> None:
        try:
            results[item] = flusher.submit(item)
        except BaseException as exc:
            results[item] = exc

    first = threading.Thread(target=send, args=(1,))
    first.start()
    assert entered.wait(timeout=30)
    others = [threading.Thread(target=send, args=(item,)) for item in (2, 3, 4)]
    for thread in others:
        thread.start()
    deadline = time.monotonic() + 30
    while flusher.pending() < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    release.set()
    for thread in [first, *others]:
        thread.join(timeout=60)
    flusher.close()
    return results


def test_items_that_arrive_during_a_flush_share_the_next_one() -> None:
    flusher, batches, entered, release = _hold_first_flush(fail_after_first=False)
    results = _send_while_held(flusher, entered, release)
    assert batches == [[1], [2, 3, 4]]
    assert results == {1: 10, 2: 20, 3: 30, 4: 40}


def test_a_failed_flush_fails_every_member_and_is_never_retried() -> None:
    flusher, batches, entered, release = _hold_first_flush(fail_after_first=True)
    results = _send_while_held(flusher, entered, release)
    assert batches == [[1], [2, 3, 4]], "no member was flushed again on its own"
    assert results[1] == 10
    for item in (2, 3, 4):
        failure = results[item]
        assert isinstance(failure, OSError) and failure.errno == 5


def test_a_closed_shared_flush_refuses_new_items() -> None:
    flusher: SharedFlush[int, int] = SharedFlush(lambda items: list(items))
    assert flusher.submit(7) == 7
    flusher.close()
    with pytest.raises(RuntimeError, match="closed"):
        flusher.submit(8)
