"""annotate-review end to end: the run waits at its human step until the API says go on.

Two CT series: one is marked done (radiomics runs on organ-seg's SEG), the other gets a
corrected SEG uploaded (the phantom's truth; radiomics runs on it).
"""

from __future__ import annotations

import csv
import io
import time
from typing import Any

import pytest
from jip_sdk.phantom import build_abdomen_phantom, write_truth_seg
from tests.flow.conftest import Site
from tests.flow.support import ingest_phantom, run_detail, series_state, wait_for, wait_for_run

pytestmark = pytest.mark.slow

DAG = "annotate-review"


def _both_waiting(site: Site, run_id: str, uids: list[str]) -> dict[str, Any] | None:
    detail = run_detail(site.api, run_id)
    states = [series_state(detail, uid)["tasks"].get("annotate") for uid in uids]
    return detail if states == ["waiting", "waiting"] else None


def _csv_rows(site: Site, run_id: str, series_uid: str) -> list[dict[str, str]]:
    results = site.api.get(f"/api/flow/runs/{run_id}/results", params={"series": series_uid})
    (found,) = [r for r in results.json() if r["name"].endswith("radiomics.csv")]
    return list(csv.DictReader(io.StringIO(site.api.get(found["url"]).text)))


def test_run_waits_for_the_review_then_goes_on(
    site: Site, tmp_path_factory: pytest.TempPathFactory
) -> None:
    folder = tmp_path_factory.mktemp("review")
    phantom = build_abdomen_phantom()
    done = ingest_phantom(site.runtime, phantom, folder / "a", patient_id="E2E-REVIEW-A")
    corrected = ingest_phantom(site.runtime, phantom, folder / "b", patient_id="E2E-REVIEW-B")
    uids = [done.series_instance_uid, corrected.series_instance_uid]
    answer = site.api.post(f"/api/flow/workflows/{DAG}/runs", json={"series": uids})
    assert answer.status_code == 201, answer.text
    run_id = answer.json()["run_id"]

    wait_for("both series waiting at annotate", lambda: _both_waiting(site, run_id, uids))
    time.sleep(5)  # nobody answered: still waiting, nothing after it has started
    detail = run_detail(site.api, run_id)
    assert detail["state"] == "running"
    for uid in uids:
        tasks = series_state(detail, uid)["tasks"]
        assert tasks["annotate"] == "waiting"
        assert tasks.get("radiomics", "pending") == "pending"

    # One series is done as proposed ...
    marked = site.api.post(
        f"/api/flow/runs/{run_id}/tasks/annotate/done", json={"series": [done.series_instance_uid]}
    )
    assert marked.status_code == 200, marked.text
    # ... the other gets a corrected SEG (the phantom's truth, liver and spleen only).
    seg_path = write_truth_seg(phantom, corrected.series, folder / "seg", organs=("liver", "spleen"))
    uploaded = site.api.post(
        f"/api/flow/runs/{run_id}/tasks/annotate/seg",
        files={"files": ("seg.dcm", seg_path.read_bytes(), "application/dicom")},
    )
    assert uploaded.status_code == 200, uploaded.text
    corrected_seg = seg_path.parent.name

    final = wait_for_run(site.api, run_id)
    assert final["state"] == "success", final["per_series"]
    rows = _csv_rows(site, run_id, corrected.series_instance_uid)
    assert {r["seg_series_instance_uid"] for r in rows} == {corrected_seg}
    assert sorted(r["segment_label"] for r in rows) == ["Liver", "Spleen"]
    proposed = _csv_rows(site, run_id, done.series_instance_uid)
    assert len(proposed) == 5 and corrected_seg not in {r["seg_series_instance_uid"] for r in proposed}
    late = site.api.post(f"/api/flow/runs/{run_id}/tasks/annotate/done")
    assert late.status_code == 409
