"""Cohort query speed of the SQLite metadata index against a plain scan in Python.

Builds ``--series`` generated series documents into a fresh SQLite index in a temporary
directory (indexing throughput), then runs typical cohort queries many times, each the
way the search page asks it: three filters, the first page of hits with the total, and
two facets (terms on Manufacturer, a yearly date histogram of StudyDate). ``query`` is the
researcher's "CT of the abdomen, slices of 3 mm or less"; ``broad`` keeps about a fifth of
all series. The same answers computed by a full scan over the documents in memory are
the reference, measured in the same run.

    .venv/bin/python bench/bench_query.py [--series 100000] [--runs 50]

Target: p95 <= 100 ms for 100,000 series on the development machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "services"), str(ROOT)]

from tests.meta.corpus import make_series_docs  # noqa: E402
from timing import percentile, timed  # noqa: E402

from jip.meta import parse_aggs, parse_query  # noqa: E402
from jip.meta.index_sqlite import SqliteIndex  # noqa: E402

COHORTS: dict[str, tuple[dict[str, Any], Callable[[dict[str, Any]], bool]]] = {
    # the researcher's question: CT of the abdomen, slices of 3 mm or less
    "query": (
        {"bool": {"filter": [
            {"term": {"Modality": "CT"}},
            {"term": {"BodyPartExamined": "ABDOMEN"}},
            {"range": {"SliceThickness": {"lte": 3}}},
        ]}},
        lambda d: d.get("Modality") == "CT" and d.get("BodyPartExamined") == "ABDOMEN"
        and d.get("SliceThickness") is not None and d["SliceThickness"] <= 3,
    ),
    # a broad one: every recent thin CT (about a fifth of all series)
    "broad": (
        {"bool": {"filter": [
            {"term": {"Modality": "CT"}},
            {"range": {"SliceThickness": {"lte": 3}}},
            {"range": {"StudyDate": {"gte": "2015-01-01"}}},
        ]}},
        lambda d: d.get("Modality") == "CT" and d.get("SliceThickness") is not None
        and d["SliceThickness"] <= 3 and d.get("StudyDate", "") >= "2015-01-01",
    ),
}
AGGS = {
    "manufacturer": {"terms": {"field": "Manufacturer", "size": 10}},
    "per_year": {"date_histogram": {"field": "StudyDate", "calendar_interval": "year"}},
}
PAGE = 20
BATCH = 5000
Answer = tuple[int, list[str], list[tuple[str, int]], dict[str, int]]


def indexed_answer(index: SqliteIndex, query: dict[str, Any]) -> Answer:
    """What the search page asks: the first page of hits, the total and two facets. The
    query and facets are parsed here, as the API parses them at the edge for each request
    (the index port takes parsed trees)."""
    found = index.search(
        parse_query(query), limit=PAGE, fields=["SeriesInstanceUID"], aggs=parse_aggs(AGGS)
    )
    facets = found.aggregations
    manufacturers = [(b["key"], b["doc_count"]) for b in facets["manufacturer"]["buckets"]]
    years = {b["key_as_string"][:4]: b["doc_count"] for b in facets["per_year"]["buckets"]
             if b["doc_count"]}
    return found.total, [h["SeriesInstanceUID"] for h in found.hits], manufacturers, years


def scanned_answer(docs: list[dict[str, Any]], keep: Callable[[dict[str, Any]], bool]) -> Answer:
    """The same by a full scan; the page is the first matches in index (list) order."""
    hits = [d for d in docs if keep(d)]
    page = [d["SeriesInstanceUID"] for d in hits[:PAGE]]
    counts = Counter(d["Manufacturer"] for d in hits if "Manufacturer" in d)
    manufacturers = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    years = Counter(d["StudyDate"][:4] for d in hits if "StudyDate" in d)
    return len(hits), page, manufacturers, dict(years)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args()

    docs = make_series_docs(args.series, seed=args.seed)
    with tempfile.TemporaryDirectory(prefix="jip-bench-") as tmp:
        index = SqliteIndex(Path(tmp) / "index.db")
        start = time.perf_counter()
        for offset in range(0, len(docs), BATCH):
            index.upsert(docs[offset:offset + BATCH])
        index_rate = len(docs) / (time.perf_counter() - start)
        size_mb = sum(f.stat().st_size for f in Path(tmp).iterdir()) / 1e6

        results = {}
        for name, (query, keep) in COHORTS.items():
            if indexed_answer(index, query) != scanned_answer(docs, keep):
                print(f"MISMATCH: the index and the scan disagree on {name}", file=sys.stderr)
                return 1
            query_ms = timed(lambda q=query: indexed_answer(index, q), args.runs)
            scan_ms = timed(lambda k=keep: scanned_answer(docs, k), max(5, args.runs // 5))
            results[name] = (scanned_answer(docs, keep)[0], query_ms, scan_ms)
        index.close()

    print(f"series={len(docs)} index_size={size_mb:.0f}MB runs={args.runs} "
          "(each run: one search call for the first page, the total, a terms and a "
          "date_histogram facet)")
    for name, (matched, query_ms, scan_ms) in results.items():
        p50, p95 = percentile(query_ms, 0.5), percentile(query_ms, 0.95)
        scan_p50 = percentile(scan_ms, 0.5)
        print(f"{name}: p50={p50:.1f}ms p95={p95:.1f}ms scan_p50={scan_p50:.1f}ms "
              f"ratio={scan_p50 / p50:.1f}x index_rate={index_rate:.0f}series/s "
              f"matched={matched}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
