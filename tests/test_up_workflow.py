"""The FLOW promise on a real `jip up`: send an abdominal CT with storescu and the
auto-rule produces the SEG and the radiomics CSV with no further action.

The site is the session's shared `jip up` (tests/up_site.py): everything is the shipped
default except ports and a short quiet period, auth is on, Airflow is started by `jip up`.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.test_embedded import JIP
from tests.up_site import ABDOMEN_CT, AbdomenCt, UpSite, wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk is not installed"),
]


@pytest.fixture
def site(up_site: UpSite) -> tuple[httpx.Client, int, Path]:
    return up_site.api, up_site.dicom_port, up_site.log


def test_storescu_of_an_abdominal_ct_yields_seg_and_radiomics_by_rule(
    site: tuple[httpx.Client, int, Path], abdomen_ct: AbdomenCt
) -> None:
    api, _, log = site
    rule = {
        "name": "abdomen-ct-organs",
        "dag_id": "organ-seg-radiomics",
        "query": ABDOMEN_CT,
    }
    added = api.post("/api/flow/rules", json=rule)
    assert added.status_code == 201, added.text

    # A rule fires for series that become complete once it exists (with a short look
    # back): this test must be the session's first to send the phantom.
    assert abdomen_ct.sent is None, "another test sent the abdominal CT before this rule existed"
    written = abdomen_ct.send()  # storescu to the site's DICOM port

    def fired_run() -> str | None:
        firings: list[dict[str, Any]] = api.get(f"/api/flow/rules/{rule['name']}/firings").json()
        runs = [f["run_id"] for f in firings if f.get("run_id")]
        return runs[0] if runs else None

    run_id = wait_for("the rule to start a run", fired_run, log, 180)

    def finished() -> dict[str, Any] | None:
        detail: dict[str, Any] = api.get(f"/api/flow/runs/{run_id}").json()
        return detail if detail["state"] in ("success", "failed", "cancelled") else None

    detail = wait_for("the run to finish", finished, log, 420)
    assert detail["state"] == "success", detail

    results = api.get(f"/api/flow/runs/{run_id}/results").json()
    (seg,) = [r for r in results if r["kind"] == "dicom"]
    assert seg["series_instance_uid"] == written.series_instance_uid
    found = api.get(
        f"/dicom-web/studies/{written.study_instance_uid}/series",
        params={"Modality": "SEG"},
    ).json()
    assert [s["0020000E"]["Value"][0] for s in found] == [seg["result_series_uid"]]

    (table,) = [r for r in results if r["name"].endswith("radiomics.csv")]
    download = api.get(table["url"])
    assert download.status_code == 200
    rows = list(csv.DictReader(io.StringIO(download.text)))
    assert {r["segment_label"] for r in rows} >= {"Liver", "Spleen", "Body"}
    assert all(r["series_instance_uid"] == written.series_instance_uid for r in rows)


def test_a_saved_cohort_runs_by_hand_from_the_cli(
    site: tuple[httpx.Client, int, Path], tmp_path: Path
) -> None:
    """Uses the CT the previous test sent; the cohort is saved over the API."""
    api, _, _ = site
    created = api.post(
        "/api/meta/cohorts", json={"name": "abdomen-ct", "project": "default", "query": ABDOMEN_CT}
    )
    assert created.status_code == 201, created.text
    cohort_id = created.json()["id"]
    assert api.get(f"/api/meta/cohorts/{cohort_id}/series").json()["total"] == 1

    token = api.headers["Authorization"].removeprefix("Bearer ")
    env = {
        **os.environ,
        "HOME": str(tmp_path),  # no stored `jip login` token: use JIP_API_TOKEN
        "JIP_API_URL": str(api.base_url),
        "JIP_API_TOKEN": token,
    }
    result = subprocess.run(
        [*JIP, "flow", "run", "organ-seg-radiomics", "--cohort", cohort_id,
         "--wait", "--json", "--timeout", "400"],
        env=env, capture_output=True, text=True, timeout=460,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["run"]["state"] == "success"
    kinds = sorted(r["kind"] for r in outcome["results"])
    assert "dicom" in kinds and len(kinds) >= 2
