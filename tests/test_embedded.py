"""`jip up` end to end: the embedded platform receives, finds and serves a study.

Real peers only: dcmtk's echoscu/storescu/findscu send to the listener started by
`jip up`, and dicomweb-client reads back over DICOMweb.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pydicom
import pytest
from tests.support.network import free_port

from jip.samples import synthetic_site, write_datasets

pytestmark = pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk is not installed")

JIP = [sys.executable, "-m", "jip.cli.main"]


@dataclass
class Site:
    data_dir: Path
    http: str
    dicom_port: int
    process: subprocess.Popen[bytes]
    log: Path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("up")
    data_dir, log = root / "data", root / "jip-up.log"
    http_port, dicom_port = free_port(), free_port()
    # dcmtk's tools call as STORESCU and FINDSCU: declared peers (unknown AEs get nothing).
    peers = {name.lower(): {"ae_title": name, "host": "127.0.0.1", "port": 9} for name in ("STORESCU", "FINDSCU")}  # fmt: skip
    env = {**os.environ, "JIP_AUTH__ENABLED": "false", "JIP_STORE__PEERS": json.dumps(peers)}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*JIP, "--data-dir", str(data_dir), "up", "--http-port", str(http_port),
             "--dicom-port", str(dicom_port), "--listeners", "2", "--no-airflow"],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )
    site = Site(data_dir, f"http://127.0.0.1:{http_port}", dicom_port, process, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"jip up exited early:\n{log.read_text()}")
        try:
            if httpx.get(f"{site.http}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    else:
        process.kill()
        pytest.fail(f"jip up not healthy after 60 s:\n{log.read_text()}")
    yield site
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def test_status_reports_what_runs_where(site: Site) -> None:
    result = subprocess.run(
        [*JIP, "--data-dir", str(site.data_dir), "status", "--json"],
        capture_output=True, text=True, check=True,
    )
    state = json.loads(result.stdout)
    assert state["running"] is True
    assert state["http"] == site.http
    assert state["health"]["status"] == "ok"
    assert str(site.dicom_port) in json.dumps(state["components"])


def test_echoscu_is_answered(site: Site) -> None:
    subprocess.run(["echoscu", "-aec", "JIP", "127.0.0.1", str(site.dicom_port)], check=True, timeout=30)


def test_storescu_study_is_found_and_served(site: Site, tmp_path: Path) -> None:
    datasets = synthetic_site(patients=1, studies_per_patient=1, series_per_study=2, slices=4, seed=11)
    files = write_datasets(datasets, tmp_path / "study")
    subprocess.run(
        ["storescu", "-aec", "JIP", "127.0.0.1", str(site.dicom_port), *map(str, files)],
        check=True, timeout=60,
    )
    study_uid = datasets[0].StudyInstanceUID

    found = subprocess.run(
        ["findscu", "-S", "-aec", "JIP", "-k", "QueryRetrieveLevel=STUDY",
         "-k", f"StudyInstanceUID={study_uid}", "-k", "NumberOfStudyRelatedInstances",
         "127.0.0.1", str(site.dicom_port)],
        capture_output=True, text=True, check=True, timeout=30,
    )
    output = found.stdout + found.stderr
    assert study_uid in output
    assert re.search(r"\[8 ?\]", output)  # NumberOfStudyRelatedInstances (IS, padded to even length)

    from dicomweb_client.api import DICOMwebClient

    client = DICOMwebClient(url=f"{site.http}/dicom-web")
    studies = client.search_for_studies(search_filters={"StudyInstanceUID": study_uid})
    assert len(studies) == 1
    sent = {ds.SOPInstanceUID: ds for ds in (pydicom.dcmread(f) for f in files)}
    for ds in datasets[:4]:
        got = client.retrieve_instance(study_uid, ds.SeriesInstanceUID, ds.SOPInstanceUID)
        original = sent[ds.SOPInstanceUID]
        assert got.PixelData == original.PixelData
        assert got.PatientName == original.PatientName


def test_sigterm_stops_cleanly(site: Site) -> None:
    site.process.send_signal(signal.SIGTERM)
    assert site.process.wait(timeout=60) == 0, site.log.read_text()
    assert not (site.data_dir / "jip-up.json").exists()
