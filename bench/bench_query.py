"""Cohort query speed of the SQLite metadata index against a plain scan and OpenSearch.

Builds ``--series`` generated series documents into a fresh SQLite index in a temporary
directory by its bulk rebuild (indexing throughput, by the clock and per CPU second, as
other work on a shared machine slows the first), then runs typical cohort queries many
times, each the way the search page asks it: three filters, the first page of hits with
the total, and two facets (terms on Manufacturer, a yearly date histogram of StudyDate).
``query`` is the researcher's "CT of the abdomen, slices of 3 mm or less"; ``broad``
keeps about a fifth of all series. References measured in the same run:

- the same answers by a full scan over the documents in memory (``scan``);
- the same searches on OpenSearch (``--opensearch URL``, or JIP_TEST_OPENSEARCH_URL as
  ``deploy/opensearch-test.sh`` exports it): the documents go into a throwaway index,
  totals and facets must agree (hit order is OpenSearch's own, so the page is not compared);
- the SQLite queries again while another process indexes new series (``+ingest``), as
  the indexer does while a PACS sends; beside the clock, the CPU time each search spent
  (``on_cpu``), which tells the search's own work from its wait for a core.

    .venv/bin/python bench/bench_query.py [--series 100000] [--runs 50] [--opensearch URL]

Target (issue #14): at 1,000,000 series, ``query`` p95 <= 50 ms, ``broad`` p95 <= 200 ms,
facets included, while ingest goes on; indexing >= 10,000 series/s.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "services"), str(ROOT)]

from tests.meta.corpus import make_series_docs  # noqa: E402
from timing import percentile, timed  # noqa: E402

from jip.meta import MetaIndex, parse_aggs, parse_query  # noqa: E402
from jip.meta.fields import normalize_document  # noqa: E402
from jip.meta.index_opensearch import OpenSearchIndex  # noqa: E402
from jip.meta.index_sqlite import SqliteIndex  # noqa: E402

COHORTS: dict[str, tuple[dict[str, Any], Callable[[dict[str, Any]], bool]]] = {
    # the researcher's question: CT of the abdomen, slices of 3 mm or less
    "query": (
        {
            "bool": {
                "filter": [
                    {"term": {"Modality": "CT"}},
                    {"term": {"BodyPartExamined": "ABDOMEN"}},
                    {"range": {"SliceThickness": {"lte": 3}}},
                ]
            }
        },
        lambda d: (
            d.get("Modality") == "CT"
            and d.get("BodyPartExamined") == "ABDOMEN"
            and d.get("SliceThickness") is not None
            and d["SliceThickness"] <= 3
        ),
    ),
    # a broad one: every recent thin CT (about a fifth of all series)
    "broad": (
        {
            "bool": {
                "filter": [
                    {"term": {"Modality": "CT"}},
                    {"range": {"SliceThickness": {"lte": 3}}},
                    {"range": {"StudyDate": {"gte": "2015-01-01"}}},
                ]
            }
        },
        lambda d: (
            d.get("Modality") == "CT"
            and d.get("SliceThickness") is not None
            and d["SliceThickness"] <= 3
            and d.get("StudyDate", "") >= "2015-01-01"
        ),
    ),
}
AGGS = {
    "manufacturer": {"terms": {"field": "Manufacturer", "size": 10}},
    "per_year": {"date_histogram": {"field": "StudyDate", "calendar_interval": "year"}},
}
PAGE = 20
INGEST_RATE = 1000  # series/s the background indexer writes during "+ingest" (a busy PACS)
Answer = tuple[int, list[str], list[tuple[str, int]], dict[str, int]]


def indexed_answer(index: MetaIndex, query: dict[str, Any]) -> Answer:
    """What the search page asks: the first page of hits, the total and two facets. The
    query and facets are parsed here, as the API parses them at the edge for each request
    (the index port takes parsed trees)."""
    found = index.search(
        parse_query(query), limit=PAGE, fields=["SeriesInstanceUID"], aggs=parse_aggs(AGGS)
    )
    facets = found.aggregations
    manufacturers = [(b["key"], b["doc_count"]) for b in facets["manufacturer"]["buckets"]]
    years = {
        b["key_as_string"][:4]: b["doc_count"]
        for b in facets["per_year"]["buckets"]
        if b["doc_count"]
    }
    return found.total, [h["SeriesInstanceUID"] for h in found.hits], manufacturers, years


def scanned_answer(docs: list[dict[str, Any]], keep: Callable[[dict[str, Any]], bool]) -> Answer:
    """The same by a full scan; the page is the first matches in index (list) order."""
    hits = [d for d in docs if keep(d)]
    page = [d["SeriesInstanceUID"] for d in hits[:PAGE]]
    counts = Counter(d["Manufacturer"] for d in hits if "Manufacturer" in d)
    manufacturers = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    years = Counter(d["StudyDate"][:4] for d in hits if "StudyDate" in d)
    return len(hits), page, manufacturers, dict(years)


def on_cpu(run: Callable[[], object], spent: list[float]) -> Callable[[], None]:
    """``run``, noting the milliseconds of CPU this thread spent in each call: on a
    shared machine the clock also counts the time a search waited for a core."""

    def measured() -> None:
        start = time.thread_time()
        run()
        spent.append((time.thread_time() - start) * 1000)

    return measured


def ingest(path: str, ready: Any, stop: Any, seed: int) -> None:
    """Another process indexing new series at INGEST_RATE until ``stop`` is set."""
    index = SqliteIndex(path)
    fresh = make_series_docs(20_000, seed=seed)
    ready.set()
    batch, at = INGEST_RATE // 10, 0
    while not stop.is_set() and at < len(fresh):
        started = time.perf_counter()
        index.upsert(fresh[at : at + batch])
        at += batch
        time.sleep(max(0.0, 0.1 - (time.perf_counter() - started)))
    index.close()


def build_opensearch(url: str, docs: list[dict[str, Any]]) -> tuple[OpenSearchIndex, float]:
    """A throwaway OpenSearch index holding ``docs`` (bulk requests of 5,000, three in
    flight, refresh off while loading, as a rebuild does); its indexing rate."""
    name = f"jip-bench-query-{uuid.uuid4().hex[:8]}"
    index = OpenSearchIndex.from_url(url, index=name, timeout=120)
    index.ensure_index()
    settings = index.client.indices.put_settings
    settings(index=name, body={"index": {"refresh_interval": "-1", "number_of_replicas": 0}})
    start = time.perf_counter()

    def send(chunk: list[dict[str, Any]]) -> None:
        body: list[dict[str, Any]] = []
        for doc in map(normalize_document, chunk):
            body += [{"index": {"_index": name, "_id": doc["SeriesInstanceUID"]}}, doc]
        if index.client.bulk(body=body, request_timeout=300).get("errors"):
            raise RuntimeError("OpenSearch refused some documents")

    with ThreadPoolExecutor(3) as pool:
        list(pool.map(send, [docs[i : i + 5000] for i in range(0, len(docs), 5000)]))
    index.client.indices.refresh(index=name)
    rate = len(docs) / (time.perf_counter() - start)
    settings(index=name, body={"index": {"refresh_interval": "1s"}})
    index.client.indices.forcemerge(index=name, max_num_segments=1, request_timeout=600)
    return index, rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--series", type=int, default=1_000_000, help="series in the index (the issue's 1M)"
    )
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument(
        "--opensearch",
        default=os.environ.get("JIP_TEST_OPENSEARCH_URL"),
        help="an OpenSearch URL to compare with (default: JIP_TEST_OPENSEARCH_URL)",
    )
    args = parser.parse_args()

    docs = make_series_docs(args.series, seed=args.seed)
    with tempfile.TemporaryDirectory(prefix="jip-bench-") as tmp:
        path = str(Path(tmp) / "index.db")
        index = SqliteIndex(path)
        start, cpu = time.perf_counter(), time.process_time()
        index.rebuild(docs)  # the bulk path, as a reindex or a catalogue change runs it
        index_rate = len(docs) / (time.perf_counter() - start)
        index_cpu_rate = len(docs) / (time.process_time() - cpu)
        size_mb = sum(f.stat().st_size for f in Path(tmp).iterdir()) / 1e6

        results: dict[str, dict[str, Any]] = {}
        for name, (query, keep) in COHORTS.items():
            expected = scanned_answer(docs, keep)
            if indexed_answer(index, query) != expected:
                print(f"MISMATCH: the index and the scan disagree on {name}", file=sys.stderr)
                return 1
            results[name] = {
                "matched": expected[0],
                "ours": timed(lambda q=query: indexed_answer(index, q), args.runs),
                "scan": timed(lambda k=keep: scanned_answer(docs, k), max(5, args.runs // 5)),
            }
        spawn = multiprocessing.get_context("spawn")
        ready, stop = spawn.Event(), spawn.Event()
        writer = spawn.Process(target=ingest, args=(path, ready, stop, args.seed + 1))
        writer.start()
        ready.wait(120)
        for name, (query, _) in COHORTS.items():
            spent: list[float] = []
            results[name]["ingest"] = timed(
                on_cpu(lambda q=query: indexed_answer(index, q), spent), args.runs
            )
            results[name]["ingest_cpu"] = spent[1:]  # after the warm-up call
        stop.set()
        writer.join()
        index.close()

    os_rate = None
    if args.opensearch:
        remote, os_rate = build_opensearch(args.opensearch, docs)
        try:
            for name, (query, keep) in COHORTS.items():
                theirs, ours = indexed_answer(remote, query), scanned_answer(docs, keep)
                if (theirs[0], theirs[2], theirs[3]) != (ours[0], ours[2], ours[3]):
                    print(f"MISMATCH: OpenSearch and the scan disagree on {name}", file=sys.stderr)
                    return 1
                results[name]["opensearch"] = timed(
                    lambda q=query: indexed_answer(remote, q), args.runs
                )
        finally:
            remote.client.indices.delete(index=remote.index)
            remote.close()

    print(
        f"series={len(docs)} index_size={size_mb:.0f}MB runs={args.runs} "
        f"load={' '.join(Path('/proc/loadavg').read_text().split()[:3])} "
        "(each run: one search call for the first page, the total, a terms and a "
        "date_histogram facet)"
    )
    line = (
        f"indexing (rebuild): sqlite={index_rate:.0f}series/s "
        f"cpu_bound={index_cpu_rate:.0f}series/s (per CPU second: the rate on an idle core)"
    )
    if os_rate:
        line += f" opensearch={os_rate:.0f}series/s ratio={index_rate / os_rate:.2f}x"
    print(line)
    for name, found in results.items():
        p50, p95 = percentile(found["ours"], 0.5), percentile(found["ours"], 0.95)
        scan_p50 = percentile(found["scan"], 0.5)
        busy = percentile(found["ingest"], 0.95)
        busy_cpu = percentile(found["ingest_cpu"], 0.95)
        text = (
            f"{name}: p50={p50:.1f}ms p95={p95:.1f}ms p95+ingest={busy:.1f}ms "
            f"(on_cpu_p95+ingest={busy_cpu:.1f}ms) "
            f"scan_p50={scan_p50:.1f}ms vs_scan={scan_p50 / p50:.1f}x"
        )
        if "opensearch" in found:
            os50, os95 = percentile(found["opensearch"], 0.5), percentile(found["opensearch"], 0.95)
            text += (
                f" opensearch_p50={os50:.1f}ms opensearch_p95={os95:.1f}ms "
                f"vs_opensearch={os50 / p50:.1f}x"
            )  # how many times faster
        print(f"{text} matched={found['matched']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
