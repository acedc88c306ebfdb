"""The FLOW promise on a real `jip up`: send an abdominal CT with storescu and the
auto-rule produces the SEG and the radiomics CSV with no further action.

Everything is the shipped default except ports and a short quiet period: auth is on
(the first admin's password comes from JIP_AUTH__ADMIN_PASSWORD), Airflow is started by
`jip up`, the tasks reach the API with the service token `jip up` mints.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from tests.test_embedded import JIP, free_port

from jip.flow.sdk.phantom import build_abdomen_phantom, write_ct_series

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk is not installed"),
]

PASSWORD = "e2e-admin-password-1"
ABDOMEN_CT = {
    "bool": {"filter": [{"term": {"Modality": "CT"}}, {"term": {"BodyPartExamined": "ABDOMEN"}}]}
}
T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], log: Path, timeout_s: float) -> T:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = probe()
        if value is not None:
            return value
        time.sleep(1)
    pytest.fail(f"timed out waiting for {what}; jip up log:\n{log.read_text()[-6000:]}")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, int, Path]]:
    root = tmp_path_factory.mktemp("up-flow")
    log = root / "jip-up.log"
    http_port, dicom_port, airflow_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "JIP_AUTH__ADMIN_PASSWORD": PASSWORD,
        "JIP_META__SERIES_QUIET_PERIOD_S": "3",
        "JIP_FLOW__RULE_INTERVAL_S": "1",
        "JIP_FLOW__AIRFLOW_PORT": str(airflow_port),
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*JIP, "--data-dir", str(root / "data"), "up", "--http-port", str(http_port),
             "--dicom-port", str(dicom_port), "--listeners", "1"],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    base = f"http://127.0.0.1:{http_port}"

    def healthy() -> bool | None:
        if process.poll() is not None:
            pytest.fail(f"jip up exited:\n{log.read_text()[-6000:]}")
        try:
            return True if httpx.get(f"{base}/healthz", timeout=2).status_code == 200 else None
        except httpx.HTTPError:
            return None

    try:
        wait_for("jip up to be healthy (Airflow included)", healthy, log, 240)
        token = httpx.post(
            f"{base}/auth/token",
            data={"grant_type": "password", "username": "admin", "password": PASSWORD,
                  "client_id": "jip-cli"},
        ).json()["access_token"]  # fmt: skip
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as api:
            yield api, dicom_port, log
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)


def test_storescu_of_an_abdominal_ct_yields_seg_and_radiomics_by_rule(
    site: tuple[httpx.Client, int, Path], tmp_path: Path
) -> None:
    api, dicom_port, log = site
    rule = {
        "name": "abdomen-ct-organs",
        "dag_id": "organ-seg-radiomics",
        "query": ABDOMEN_CT,
    }
    added = api.post("/api/flow/rules", json=rule)
    assert added.status_code == 201, added.text

    written = write_ct_series(build_abdomen_phantom(), tmp_path / "ct")
    files = sorted(str(p) for p in written.series.path.glob("*.dcm"))
    subprocess.run(
        ["storescu", "-aec", "JIP", "127.0.0.1", str(dicom_port), *files], check=True, timeout=120
    )

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
