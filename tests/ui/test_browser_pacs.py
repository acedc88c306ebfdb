"""The PACS page in Debian's Chromium against a real `jip up`, with Orthanc (Debian's 1.10)
as the hospital PACS: query it, retrieve a study into a project and find it in Explore;
save the query and have the site's scheduler run it (made due with "Run now", never by
waiting for the night): each run retrieves only the studies the site does not hold yet.
Screenshots go to test-artifacts/screenshots/pacs-*.png.

Airflow is off in this `jip up` (no workflow runs here): it starts in seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.store.conftest import Orthanc, orthanc_binary, running_orthanc
from tests.support.network import free_port
from tests.test_embedded import JIP
from tests.up_site import wait_for

from jip.config import DicomPeer
from jip.samples import image_series, random_patient, write_datasets

pytestmark = [pytest.mark.orthanc, pytest.mark.slow]
PASSWORD = "pacs-admin-password-1"
PROJECT = "trial"


@dataclass
class Hospital:
    origin: str
    api: httpx.Client
    pacs: Orthanc
    folder: Path
    log: Path

    def add_study(self, index: int) -> str:
        """A study of patient PAT000<index> on the PACS; its Study Instance UID."""
        patient = random_patient(random.Random(index), index)
        study = image_series(patient=patient, slices=3, rows=32, columns=32, study_date="20250301")
        for path in write_datasets(study, self.folder / str(index)):
            self.pacs.upload(path.read_bytes())
        return str(study[0].StudyInstanceUID)


@pytest.fixture(scope="module")
def hospital(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hospital]:
    if orthanc_binary() is None:
        pytest.skip("Orthanc is not installed (apt install orthanc)")
    root = tmp_path_factory.mktemp("pacs-site")
    http_port, dicom_port, orthanc_port = free_port(), free_port(), free_port()
    pacs_peer = {"ae_title": "ORTHANC", "host": "127.0.0.1", "port": orthanc_port}
    env = {
        **os.environ,
        "JIP_AUTH__ADMIN_PASSWORD": PASSWORD,
        "JIP_AUTH__ACCESS_TOKEN_TTL_S": "3600",
        "JIP_FLOW__AIRFLOW_ENABLED": "false",
        "JIP_STORE__PEERS": json.dumps({"pacs": pacs_peer}),
        "JIP_STORE__PACS__SCHEDULER_INTERVAL_S": "0.5",
        "JIP_META__INDEX_INTERVAL_S": "0.2",
    }
    log = root / "jip-up.log"
    (root / "orthanc").mkdir()
    with contextlib.ExitStack() as stack:
        jip_ae = DicomPeer(ae_title="JIP", host="127.0.0.1", port=dicom_port)
        pacs = stack.enter_context(running_orthanc(root / "orthanc", {"jip": jip_ae}, dicom_port=orthanc_port))  # fmt: skip
        out = stack.enter_context(log.open("wb"))
        process = subprocess.Popen(
            [*JIP, "--data-dir", str(root / "data"), "up", "--http-port", str(http_port),
             "--dicom-port", str(dicom_port), "--listeners", "1"],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        stack.callback(process.wait, 60)
        stack.callback(process.send_signal, signal.SIGTERM)
        origin = f"http://127.0.0.1:{http_port}"

        def healthy() -> bool | None:
            if process.poll() is not None:
                pytest.fail(f"jip up exited:\n{log.read_text()[-6000:]}")
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{origin}/healthz", timeout=2).status_code == 200 or None
            return None

        wait_for("jip up to be healthy", healthy, log, 120)
        login = {"grant_type": "password", "username": "admin", "password": PASSWORD,
                 "client_id": "jip-cli"}  # fmt: skip
        token = httpx.post(f"{origin}/auth/token", data=login).json()["access_token"]
        api = stack.enter_context(
            httpx.Client(base_url=origin, headers={"Authorization": f"Bearer {token}"}, timeout=60)
        )
        assert api.post("/api/projects", json={"name": PROJECT}).status_code == 201
        yield Hospital(origin, api, pacs, root / "studies", log)


def _indexed(hospital: Hospital, study_uid: str) -> int | None:
    query = {"query": {"term": {"StudyInstanceUID": study_uid}}, "limit": 10}
    found = hospital.api.post("/api/meta/search", json=query).json()
    return int(found["total"]) or None


def test_an_admin_queries_the_pacs_retrieves_a_study_and_runs_a_saved_query(
    hospital: Hospital, browser: Any, screenshots: Path
) -> None:
    from playwright.sync_api import expect

    first = hospital.add_study(31)
    second = hospital.add_study(32)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.goto(f"{hospital.origin}/ui/pacs")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    expect(page).to_have_url(re.compile(r"/ui/explore"))
    page.click("header nav >> text=PACS")
    expect(page).to_have_url(f"{hospital.origin}/ui/pacs")
    page.screenshot(path=str(screenshots / "pacs.png"), full_page=True)

    # Query by patient ID, pick the study, retrieve it into the project.
    page.fill("input[name=patient_id]", "PAT00031")
    page.click("form[aria-label=Query] button[type=submit]")
    rows = page.locator("table.studies tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("PAT00031")
    page.screenshot(path=str(screenshots / "pacs-query.png"), full_page=True)
    page.check(f"input[name=study][value='{first}']")
    page.select_option("form[aria-label=Retrieve] select[name=project]", PROJECT)
    page.click("text=Retrieve selected")
    expect(page).to_have_url(re.compile(r"/ui/pacs/retrievals/[0-9a-f]{32}$"))
    expect(page.locator("[data-state]")).to_have_text("done", timeout=60_000)
    expect(page.locator("[data-completed]")).to_have_text("3")
    expect(page.locator("[data-failed]")).to_have_text("0")
    page.screenshot(path=str(screenshots / "pacs-retrieval.png"), full_page=True)

    # In Explore, once the indexer has seen it.
    wait_for(
        "the retrieved study to be indexed", lambda: _indexed(hospital, first), hospital.log, 60
    )
    page.click("text=Open the retrieved studies in Explore")
    expect(page.locator("#total")).to_have_text("1 series")
    page.screenshot(path=str(screenshots / "pacs-explore.png"), full_page=True)

    # Save a query matching both studies; "Run now" makes it due for the scheduler.
    page.goto(f"{hospital.origin}/ui/pacs?search=1&peer=pacs&patient_id=PAT0003*")
    expect(page.locator("table.studies tbody tr")).to_have_count(2)
    page.fill("form[aria-label='Save query'] input[name=name]", "nightly-pat3")
    page.select_option("form[aria-label='Save query'] select[name=project]", PROJECT)
    page.fill("form[aria-label='Save query'] input[name=run_at]", "03:15")
    page.click("text=Save query")
    expect(page).to_have_url(re.compile(r"/ui/pacs/saved/\d+$"))
    page.click("text=Run now")
    run = page.locator("table.retrievals tbody tr[data-run]")
    expect(run).to_have_count(1, timeout=60_000)
    expect(run.first).to_have_attribute("data-state", "done", timeout=60_000)
    # Found both, the first was already here: only the second came.
    expect(run.first.locator("[data-found]")).to_have_text("2")
    expect(run.first.locator("[data-skipped]")).to_have_text("1")
    expect(run.first.locator("[data-completed]")).to_have_text("3")

    third = hospital.add_study(33)
    page.click("text=Run now")
    expect(run).to_have_count(2, timeout=60_000)
    expect(run.first).to_have_attribute("data-state", "done", timeout=60_000)
    expect(run.first.locator("[data-found]")).to_have_text("3")
    expect(run.first.locator("[data-skipped]")).to_have_text("2")
    expect(run.first.locator("[data-completed]")).to_have_text("3")
    page.screenshot(path=str(screenshots / "pacs-saved-query.png"), full_page=True)
    for uid in (second, third):
        assert wait_for("a study of the saved query", lambda u=uid: _indexed(hospital, u), hospital.log, 60)  # fmt: skip

    audit = hospital.api.get("/api/audit", params={"action": "dicom."}).json()
    actions = {entry["action"] for entry in audit}
    assert {"dicom.query", "dicom.retrieve", "dicom.saved_query.run"} <= actions
    context.close()
