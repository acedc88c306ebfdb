"""The ingest's group commit: instances that arrive together share one blob flush.

Every member of a flush learns its outcome: stored and catalogued when the flush and
the commit succeed, a failure and nothing recorded (no row, no blob) when the flush
fails.
"""

from __future__ import annotations

import errno
import random
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pydicom
import pytest

from jip.db import make_engine
from jip.migrations import upgrade
from jip.samples import image_series, random_patient, write_datasets
from jip.store.catalog.catalog import AddOutcome, Catalog
from jip.store.ingest import Ingestor, IngestResult
from jip.store.storage import file as storage_file
from jip.store.storage.file import FileStorage
from jip.store.storage.port import StagedBlob


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[Ingestor, FileStorage, Catalog]]:
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    upgrade(url)
    engine = make_engine(url)
    storage = FileStorage(tmp_path / "blobs")
    catalog = Catalog(engine)
    ingestor = Ingestor(storage, catalog)
    yield ingestor, storage, catalog
    ingestor.close()
    engine.dispose()


@pytest.fixture
def instances(tmp_path: Path) -> list[Path]:
    """Five CT slices of one series, written as Part 10 files."""
    datasets = image_series(
        patient=random_patient(random.Random(3), 1), slices=5, rows=8, columns=8
    )
    return write_datasets(datasets, tmp_path / "sent")


class HeldFlush:
    """Wraps ``storage.flush``: holds the first flush until released, so that the
    instances submitted meanwhile form one batch; records each batch's size."""

    def __init__(self, storage: FileStorage, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sizes: list[int] = []
        self.entered, self.release = threading.Event(), threading.Event()
        self._flush = storage.flush
        monkeypatch.setattr(storage, "flush", self.flush)

    def flush(self, staged: Sequence[StagedBlob]) -> None:
        self.sizes.append(len(staged))
        if len(self.sizes) == 1:
            self.entered.set()
            self.release.wait(timeout=30)
        self._flush(staged)


def _ingest_together(
    ingestor: Ingestor, held: HeldFlush, spooled: list[Path], before_release: object = None
) -> dict[int, IngestResult | BaseException]:
    """Ingest ``spooled[0]`` (its flush held), then the others on threads of their own."""
    results: dict[int, IngestResult | BaseException] = {}

    def ingest(index: int) -> None:
        try:
            results[index] = ingestor.ingest_file(spooled[index], "SENDER")
        except BaseException as exc:
            results[index] = exc

    threads = [threading.Thread(target=ingest, args=(i,)) for i in range(len(spooled))]
    threads[0].start()
    assert held.entered.wait(timeout=30)
    for thread in threads[1:]:
        thread.start()
    deadline = time.monotonic() + 30
    while ingestor._flusher.pending() < len(spooled) - 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    if callable(before_release):
        before_release()
    held.release.set()
    for thread in threads:
        thread.join(timeout=60)
    return results


def _spool(files: list[Path], tmp_path: Path) -> list[Path]:
    spool = tmp_path / "spool"
    spool.mkdir(exist_ok=True)
    return [Path(shutil.copy(path, spool / f"{path.stem}.part")) for path in files]


@pytest.fixture
def held(site: tuple[Ingestor, FileStorage, Catalog], monkeypatch: pytest.MonkeyPatch) -> HeldFlush:
    return HeldFlush(site[1], monkeypatch)


def test_instances_arriving_together_share_one_flush_and_are_all_catalogued(
    site: tuple[Ingestor, FileStorage, Catalog],
    held: HeldFlush,
    instances: list[Path],
    tmp_path: Path,
) -> None:
    ingestor, storage, catalog = site
    results = _ingest_together(ingestor, held, _spool(instances, tmp_path))
    assert held.sizes == [1, 4]
    assert all(
        isinstance(r, IngestResult) and r.outcome is AddOutcome.STORED for r in results.values()
    )
    assert catalog.counts()["instances"] == 5
    for path in instances:
        uid = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
        stored = storage.read_bytes(catalog.instance(uid).blob_key)
        assert stored == path.read_bytes()
    assert list((tmp_path / "spool").iterdir()) == []


def test_a_failed_flush_answers_every_member_with_a_failure_and_stores_none(
    site: tuple[Ingestor, FileStorage, Catalog],
    held: HeldFlush,
    instances: list[Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ingestor, storage, catalog = site

    def disk_fails() -> None:  # after the first instance's flush began, before the batch's
        def fsync(_fd: int) -> None:
            raise OSError(errno.EIO, "Input/output error")

        monkeypatch.setattr(storage_file.os, "fsync", fsync)

    results = _ingest_together(ingestor, held, _spool(instances, tmp_path), disk_fails)
    assert held.sizes == [1, 4]
    failed = [r for r in results.values() if isinstance(r, OSError)]
    # The held first flush ran into the failing disk too: nobody was told "stored".
    assert len(failed) == 5 and all(r.errno == errno.EIO for r in failed)
    assert catalog.counts()["instances"] == 0
    assert list(storage.keys()) == []
    assert list((tmp_path / "spool").iterdir()) == []
    monkeypatch.undo()
    # Once the disk is back, the senders' retries are stored.
    for path in _spool(instances, tmp_path):
        assert ingestor.ingest_file(path, "SENDER").outcome is AddOutcome.STORED
    assert catalog.counts()["instances"] == 5


def test_each_file_is_fsynced_by_its_own_ingest_thread_before_the_shared_flush(
    site: tuple[Ingestor, FileStorage, Catalog],
    held: HeldFlush,
    instances: list[Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No hand-off to another thread for a file's own fsync: the shared flush is left
    with the folders' fsyncs only, and every blob it gets has its bytes flushed."""
    ingestor, storage, catalog = site
    file_fsyncs: list[str] = []
    real_fsync = storage_file.os.fsync

    def fsync(fd: int) -> None:
        if not Path(f"/proc/self/fd/{fd}").resolve().is_dir():
            file_fsyncs.append(threading.current_thread().name)
        real_fsync(fd)

    monkeypatch.setattr(storage_file.os, "fsync", fsync)
    flushed: list[StagedBlob] = []
    inner = storage.flush

    def flush(staged: Sequence[StagedBlob]) -> None:
        flushed.extend(staged)
        inner(staged)

    monkeypatch.setattr(storage, "flush", flush)
    results = _ingest_together(ingestor, held, _spool(instances, tmp_path))
    assert all(isinstance(r, IngestResult) for r in results.values())
    assert len(file_fsyncs) == 5 and not any(name.startswith("fsync") for name in file_fsyncs)
    assert len(flushed) == 5 and all(blob.bytes_flushed for blob in flushed)
    assert catalog.counts()["instances"] == 5
