"""Index lag: how soon a stored instance's series is searchable, at full ingest rate.

Ingests ``--instances`` CT instances (series of ``--slices``) through
``Ingestor.ingest_file`` from ``--senders`` threads at full speed (one series per sender
at a time, as a PACS sends them) into a fresh site, while the indexer component of
`jip up` runs with its production settings (``meta.index_interval_s``, batch size). A
watcher polls the index and notes when each series first shows each instance count.
The lag of an instance is the time from ``ingest_file`` returning (stored and
acknowledged) to its series being searchable with it.

Then the same instances are put back into the outbox and indexed alone, without
ingest, to measure the indexing rate. The reference is the ingest rate measured in the
same run: the ratio says how much faster indexing is than ingest can feed it.

    .venv/bin/python bench/bench_index_lag.py [--instances 5000] [--slices 50] [--senders 4]

Target: max lag under a few seconds; ratio above 1.
"""

from __future__ import annotations

import argparse
import queue
import random
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "services"), str(ROOT)]

from timing import percentile  # noqa: E402

from jip.config import Settings  # noqa: E402
from jip.embedded import meta_indexer  # noqa: E402
from jip.meta import ID_FIELD, MATCH_ALL, Indexer, IndexLedger  # noqa: E402
from jip.runtime import Runtime, build_runtime  # noqa: E402
from jip.samples import image_series, random_patient, write_datasets  # noqa: E402

POLL_S = 0.02


def make_series(folder: Path, instances: int, slices: int, size: int) -> list[list[Path]]:
    rng = random.Random(7)
    series: list[list[Path]] = []
    made = 0
    while made < instances:
        count = min(slices, instances - made)
        datasets = image_series(patient=random_patient(rng, len(series)), slices=count,
                                rows=size, columns=size, series_number=len(series) + 1,
                                slice_thickness=rng.choice([1.0, 2.0, 3.0, 5.0]))
        series.append(write_datasets(datasets, folder / f"s{len(series):05d}"))
        made += count
    return series


class Watcher(threading.Thread):
    """Polls the index; ``seen[series][k]`` is when the series first showed k instances."""

    def __init__(self, runtime: Runtime) -> None:
        super().__init__(daemon=True)
        self.runtime = runtime
        self.seen: dict[str, dict[int, float]] = defaultdict(dict)
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            hits = self.runtime.index.search(
                MATCH_ALL, limit=10000, fields=[ID_FIELD, "NumberOfInstances"]).hits
            now = time.monotonic()
            for hit in hits:
                counts = self.seen[hit[ID_FIELD]]
                for k in range(1, int(hit["NumberOfInstances"]) + 1):
                    counts.setdefault(k, now)
            time.sleep(POLL_S)


def ingest(runtime: Runtime, series: list[list[Path]], senders: int
           ) -> tuple[float, list[tuple[str, int, float]]]:
    """Ingest from ``senders`` threads; (seconds, [(series_uid, ordinal, stored_at)])."""
    work: queue.Queue[list[Path]] = queue.Queue()
    for paths in series:
        work.put(paths)
    stored: list[tuple[str, int, float]] = []
    lock = threading.Lock()

    def sender() -> None:
        while True:
            try:
                paths = work.get_nowait()
            except queue.Empty:
                return
            for ordinal, path in enumerate(paths, start=1):
                result = runtime.ingestor.ingest_file(path)
                with lock:
                    stored.append((result.series_instance_uid, ordinal, time.monotonic()))

    threads = [threading.Thread(target=sender) for _ in range(senders)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.monotonic() - started, stored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=5000)
    parser.add_argument("--slices", type=int, default=50)
    parser.add_argument("--size", type=int, default=64, help="rows and columns")
    parser.add_argument("--senders", type=int, default=4)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="jip-bench-lag-") as tmp:
        root = Path(tmp)
        series = make_series(root / "in", args.instances, args.slices, args.size)
        settings = Settings(data_dir=root / "data", auth={"enabled": False})
        runtime = build_runtime(settings)
        indexer = meta_indexer(settings)  # the component `jip up` runs, its own adapters
        indexer.start()
        watcher = Watcher(runtime)
        watcher.start()
        try:
            seconds, stored = ingest(runtime, series, args.senders)
            expected = _final_counts(stored)
            deadline = time.monotonic() + 300
            while any(watcher.seen[uid].get(n) is None for uid, n in expected.items()):
                if time.monotonic() > deadline:
                    raise SystemExit("the index did not catch up within 300 s")
                time.sleep(POLL_S)
        finally:
            watcher.stop.set()
            watcher.join()
            indexer.stop()
        lags = [watcher.seen[uid][ordinal] - at for uid, ordinal, at in stored]
        last_searchable = max(max(c.values()) for c in watcher.seen.values())
        first_stored = min(at for _, _, at in stored)

        # Indexing alone, same instances: requeue and drain with one indexer.
        ledger = IndexLedger(runtime.engine)
        queued = ledger.requeue()
        alone = Indexer(catalog=runtime.catalog, storage=runtime.storage, index=runtime.index,
                        batch_size=settings.meta.index_batch_size)
        started = time.monotonic()
        alone.drain()
        index_seconds = time.monotonic() - started
        runtime.close()

    ingest_rate = len(stored) / seconds
    index_rate = queued / index_seconds
    print(f"instances {len(stored)} in {len(series)} series of up to {args.slices}, "
          f"{args.size}x{args.size}, {args.senders} senders, "
          f"index interval {settings.meta.index_interval_s} s")
    print(f"ingest          {ingest_rate:8.0f} instances/s  ({seconds:.1f} s)")
    print(f"searchable      {len(stored) / (last_searchable - first_stored):8.0f} instances/s "
          "while ingesting")
    print(f"indexing alone  {index_rate:8.0f} instances/s  ({index_seconds:.1f} s)")
    print(f"lag stored -> searchable: p50 {percentile(lags, 0.50):.2f} s, "
          f"p95 {percentile(lags, 0.95):.2f} s, max {max(lags):.2f} s")
    print(f"ratio indexing/ingest: {index_rate / ingest_rate:.1f}x")


def _final_counts(stored: list[tuple[str, int, float]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for uid, ordinal, _ in stored:
        counts[uid] = max(counts.get(uid, 0), ordinal)
    return counts


if __name__ == "__main__":
    main()
