"""QIDO-RS series search speed over HTTP against a plain scan in Python.

Fills a fresh catalog with ``--series`` series (one instance each, synthetic headers,
written straight through ``Catalog.add``), then times typical ``GET /dicom-web/series``
searches through the whole HTTP stack (FastAPI TestClient: routing, matching in the
catalog, DICOM JSON): a filtered page as a study browser asks for it, a patient-name
wildcard, the series of one study (a viewer opening a study) and one series by UID.
The reference, measured in the same run, is a full scan over all series rows already
loaded into Python dicts, computing the same matches (no HTTP, no JSON).

    .venv/bin/python bench/bench_qido.py [--series 10000] [--runs 50]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "services"), str(ROOT)]

from fastapi.testclient import TestClient  # noqa: E402
from timing import percentile, timed  # noqa: E402

from jip.app import build_app  # noqa: E402
from jip.config import AuthSettings, Settings  # noqa: E402
from jip.runtime import build_runtime  # noqa: E402
from jip.store.catalog.catalog import Catalog, NewInstance  # noqa: E402
from jip.store.dicom_file import InstanceHeader  # noqa: E402

FAMILY = ["Meyer", "Schmidt", "Novak", "Rossi", "Dubois", "Jansen", "Kowalski", "Garcia"]
GIVEN = ["Anna", "Lukas", "Marie", "Jonas", "Sofia", "Elias", "Lea", "Noah"]
MODALITIES = ["CT", "CT", "CT", "MR", "MR", "PT", "CR"]
SERIES_PER_STUDY = 4
BATCH = 1000


def make_headers(count: int, seed: int) -> list[InstanceHeader]:
    rng = random.Random(seed)
    headers = []
    studies = (count + SERIES_PER_STUDY - 1) // SERIES_PER_STUDY
    for s in range(studies):
        patient = s // 2  # two studies per patient
        study_uid = f"2.25.{seed}.1.{s}"
        date = f"{rng.randrange(2012, 2025)}{rng.randrange(1, 13):02d}{rng.randrange(1, 29):02d}"
        name = f"{FAMILY[patient % len(FAMILY)]}{patient}^{GIVEN[patient % len(GIVEN)]}"
        for k in range(SERIES_PER_STUDY):
            if len(headers) == count:
                break
            n = len(headers)
            headers.append(
                InstanceHeader(
                    sop_instance_uid=f"2.25.{seed}.3.{n}",
                    sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                    series_instance_uid=f"2.25.{seed}.2.{n}",
                    study_instance_uid=study_uid,
                    transfer_syntax_uid="1.2.840.10008.1.2.1",
                    patient_id=f"PAT{patient:06d}",
                    patient_name=name,
                    patient_birth_date="19600101",
                    patient_sex="FM"[patient % 2],
                    study_date=date,
                    study_time="101500",
                    accession_number=f"ACC{s:08d}",
                    study_id="1",
                    study_description="Bench study",
                    modality=rng.choice(MODALITIES),
                    series_number=k + 1,
                    series_description=f"Series {k + 1}",
                    body_part_examined=rng.choice(["CHEST", "ABDOMEN", "HEAD"]),
                    instance_number=1,
                    rows=512,
                    columns=512,
                    bits_allocated=16,
                    number_of_frames=1,
                )
            )
    return headers


def fill(catalog: Catalog, headers: list[InstanceHeader]) -> float:
    start = time.perf_counter()
    for offset in range(0, len(headers), BATCH):
        catalog.add(
            [
                NewInstance(h, 1000, f"{i:064x}", f"bench/{h.sop_instance_uid}.dcm")
                for i, h in enumerate(headers[offset : offset + BATCH], start=offset)
            ]
        )
    return len(headers) / (time.perf_counter() - start)


def scan(
    rows: list[dict[str, Any]], predicate: Callable[[dict[str, Any]], bool], limit: int
) -> int:
    hits = [r for r in rows if predicate(r)]
    hits.sort(key=lambda r: (r["study_date"], r["study_time"], r["study_uid"], r["series_number"]))
    return len(hits[:limit])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args()

    headers = make_headers(args.series, args.seed)
    rows = [
        {
            "study_uid": h.study_instance_uid,
            "series_uid": h.series_instance_uid,
            "patient_name": h.patient_name.lower(),
            "study_date": h.study_date,
            "study_time": h.study_time,
            "modality": h.modality,
            "series_number": h.series_number,
        }
        for h in headers
    ]
    probe_study = headers[len(headers) // 2].study_instance_uid
    probe_series = headers[len(headers) // 3].series_instance_uid
    name_prefix = headers[len(headers) // 4].patient_name.split("^")[0][:7]
    cases: list[tuple[str, dict[str, str], Callable[[dict[str, Any]], bool], int]] = [
        (
            "CT in 2020, first page",
            {"Modality": "CT", "StudyDate": "20200101-20201231", "limit": "100"},
            lambda r: r["modality"] == "CT" and "20200101" <= r["study_date"] <= "20201231",
            100,
        ),
        (
            "patient name wildcard",
            {"PatientName": f"{name_prefix}*"},
            lambda r: r["patient_name"].startswith(name_prefix.lower()),
            5000,
        ),
        (
            "series of one study",
            {"StudyInstanceUID": probe_study},
            lambda r: r["study_uid"] == probe_study,
            5000,
        ),
        (
            "one series by UID",
            {"SeriesInstanceUID": probe_series},
            lambda r: r["series_uid"] == probe_series,
            5000,
        ),
    ]

    with tempfile.TemporaryDirectory(prefix="jip-bench-qido-") as tmp:
        settings = Settings(data_dir=Path(tmp), auth=AuthSettings(enabled=False))
        runtime = build_runtime(settings)
        fill_rate = fill(runtime.catalog, headers)
        client = TestClient(build_app(runtime))
        print(f"series={args.series} runs={args.runs} catalog_fill={fill_rate:.0f} series/s")
        for title, params, predicate, limit in cases:
            response = client.get("/dicom-web/series", params=params)
            expected = scan(rows, predicate, limit)
            if response.status_code != 200 or len(response.json()) != expected:
                print(
                    f"MISMATCH in {title!r}: {len(response.json())} != {expected}", file=sys.stderr
                )
                return 1
            http_ms = timed(lambda p=params: client.get("/dicom-web/series", params=p), args.runs)
            scan_ms = timed(lambda f=predicate, n=limit: scan(rows, f, n), args.runs)
            p50, p95 = percentile(http_ms, 0.5), percentile(http_ms, 0.95)
            scan_p50 = statistics.median(scan_ms)
            print(
                f"{title:<24} matched={expected:<5} qido p50={p50:6.1f}ms p95={p95:6.1f}ms "
                f"scan p50={scan_p50:6.1f}ms  qido/scan={p50 / scan_p50:5.2f}"
            )
        client.close()
        runtime.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
