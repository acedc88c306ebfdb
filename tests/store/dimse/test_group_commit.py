"""C-STOREs from concurrent associations share one flush (the ingest's group commit),
with real storescu processes as the senders.

Durability holds per instance: an acknowledged instance survives a kill -9 of the
listener in the middle of concurrent ingest, and a flush that fails answers every
instance waiting on it with a failure and stores none of them.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from tests.store.dimse.support import OPEN, serving
from tests.store.dimse.test_store import DCMTK_ENV, ct_files, dataset_bytes, sop_uid

from jip.store.storage import file as storage_file

if TYPE_CHECKING:
    from tests.store.conftest import Listener

pytestmark = pytest.mark.dcmtk

SUCCESS = "Received Store Response (Success)"


def start_senders(
    port: int, folders: list[list[Path]], *options: str
) -> list[subprocess.Popen[str]]:
    """One verbose storescu per folder, all at once (each logs every response)."""
    return [
        subprocess.Popen(
            ["storescu", "-v", *options, "-aec", "JIP", "127.0.0.1", str(port), *map(str, files)],
            env=DCMTK_ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for files in folders
    ]


def test_concurrent_senders_are_all_stored_as_sent_and_catalogued(
    make_listener: Callable[..., Listener], tmp_path: Path
) -> None:
    listener = make_listener(processes=2, **OPEN)
    folders = [ct_files(tmp_path / f"series{i}", slices=25, seed=i) for i in range(6)]
    for sender in start_senders(listener.port, folders):
        log, _ = sender.communicate(timeout=180)
        assert sender.returncode == 0, log[-3000:]
        assert log.count(SUCCESS) == 25
    assert listener.instance_count() == 150
    for path in (path for files in folders for path in files):
        assert dataset_bytes(listener.stored_path(sop_uid(path))) == dataset_bytes(path)
    spool = listener.settings.data_dir / "spool"
    assert [p for p in spool.rglob("*") if p.is_file()] == []  # every spool name consumed


def test_a_kill_9_during_concurrent_ingest_loses_no_acknowledged_instance(
    make_listener: Callable[..., Listener], tmp_path: Path
) -> None:
    listener = make_listener(processes=2, **OPEN)
    folders = [ct_files(tmp_path / f"series{i}", slices=100, seed=i) for i in range(4)]
    senders = start_senders(listener.port, folders)
    deadline = time.monotonic() + 120
    while listener.instance_count() < 40 and time.monotonic() < deadline:
        time.sleep(0.005)
    pids: list[int] = listener.group.describe()["pids"]  # type: ignore[assignment]
    for pid in pids:
        os.kill(pid, signal.SIGKILL)  # a crash, in the middle of the senders' streams
    logs = [sender.communicate(timeout=60)[0] for sender in senders]
    assert any(sender.returncode != 0 for sender in senders), "the kill came after the end"
    # storescu sends its files in order: the first n were acknowledged.
    acknowledged = [
        path
        for files, log in zip(folders, logs, strict=True)
        for path in files[: log.count(SUCCESS)]
    ]
    assert len(acknowledged) >= 40
    catalog, storage = listener.runtime.catalog, listener.runtime.storage
    for path in acknowledged:
        stored = catalog.instance(sop_uid(path))
        assert dataset_bytes(listener.stored_path(stored.sop_instance_uid)) == dataset_bytes(path)
        assert storage.size(stored.blob_key) == stored.size_bytes


def test_a_failing_flush_answers_every_waiting_sender_with_a_failure_and_stores_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folders = [ct_files(tmp_path / f"series{i}", slices=8, seed=i) for i in range(3)]
    with serving(tmp_path / "data", **OPEN) as (_, server, runtime):
        port = server.server_address[1]
        # One instance per series first, so that the series' folders exist: what fails
        # below is the shared flush of the others, not making a folder.
        for sender in start_senders(port, [files[:1] for files in folders]):
            assert sender.communicate(timeout=60)[0].count(SUCCESS) == 1
        flushed: list[int] = []

        def failing_disk(_fd: int) -> None:
            flushed.append(_fd)
            raise OSError(errno.EIO, "Input/output error")

        monkeypatch.setattr(storage_file.os, "fsync", failing_disk)
        # --no-halt: each sender goes on after a failed C-STORE, so that all are tried.
        senders = start_senders(port, [files[1:] for files in folders], "--no-halt")
        logs = [sender.communicate(timeout=120)[0] for sender in senders]
        monkeypatch.undo()
        for log in logs:
            assert log.count("Received Store Response") == 7, log[-3000:]
            assert SUCCESS not in log
            assert log.count("(Unknown Status: 0x110)") == 7  # 0x0110 Processing failure
        assert flushed, "the instances reached the flush"
        assert runtime.catalog.counts()["instances"] == 3
        assert len(list(runtime.storage.keys())) == 3
        spool = tmp_path / "data" / "spool"
        assert not spool.exists() or [p for p in spool.rglob("*") if p.is_file()] == []
