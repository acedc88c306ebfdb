"""One real `jip up` per test session, shared by the end-to-end tests that need Airflow.

Starting it (Airflow included) takes minutes, so tests/test_up_workflow.py and the
browser test tests/ui/test_browser_workflow.py run against the same process. Everything
is the shipped default except ports and a short quiet period: auth is on (the first
admin's password comes from JIP_AUTH__ADMIN_PASSWORD), Airflow is started by `jip up`,
the tasks reach the API with the service token `jip up` mints.

The abdominal CT phantom is sent once per session (:class:`AbdomenCt`); tests that add
runs or cohorts to the site in ways the others count are marked ``up_site_last`` and run
after them (see tests/conftest.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import httpx
import pytest
from tests.test_embedded import JIP, free_port

if TYPE_CHECKING:
    from jip_sdk.phantom import PhantomSeries

PASSWORD = "e2e-admin-password-1"
ADMIN = "admin"
ABDOMEN_CT = {
    "bool": {"filter": [{"term": {"Modality": "CT"}}, {"term": {"BodyPartExamined": "ABDOMEN"}}]}
}
LAST = "up_site_last"
T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], log: Path | None, timeout_s: float) -> T:
    """Poll ``probe`` each second until it gives a value; fail naming ``what`` (and the
    tail of ``log``, the process's log, when there is one)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = probe()
        if value is not None:
            return value
        time.sleep(1)
    tail = log.read_text(errors="replace")[-6000:] if log and log.exists() else ""
    pytest.fail(f"timed out waiting for {what}; log:\n{tail}")


@dataclass
class UpSite:
    """A running `jip up`: its web origin, an API client with the admin's token."""

    origin: str
    api: httpx.Client
    dicom_port: int
    log: Path
    username: str = ADMIN
    password: str = PASSWORD


@dataclass
class AbdomenCt:
    """The abdominal CT phantom, sent to the site's DICOM port with storescu at most once."""

    site: UpSite
    folder: Path
    sent: PhantomSeries | None = field(default=None)

    def send(self) -> PhantomSeries:
        if self.sent is None:
            # Imported here: every session loads this module through tests/conftest.py.
            from jip_sdk.phantom import build_abdomen_phantom, write_ct_series

            written = write_ct_series(build_abdomen_phantom(), self.folder)
            files = sorted(str(p) for p in written.series.path.glob("*.dcm"))
            sent = subprocess.run(
                ["storescu", "-aec", "JIP", "127.0.0.1", str(self.site.dicom_port), *files],
                capture_output=True,
                text=True,
                timeout=120,
            )
            if sent.returncode != 0:
                pytest.fail(
                    f"storescu failed:\n{sent.stdout}{sent.stderr}\n"
                    f"jip up log:\n{self.site.log.read_text()[-6000:]}"
                )
            self.sent = written
        return self.sent


def start_up_site(root: Path) -> Iterator[UpSite]:
    """Start `jip up` in ``root``, yield it once healthy, stop it with SIGTERM."""
    log = root / "jip-up.log"
    http_port, dicom_port, airflow_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "JIP_AUTH__ADMIN_PASSWORD": PASSWORD,
        # One admin token serves the whole session's tests (access tokens live 5 min).
        "JIP_AUTH__ACCESS_TOKEN_TTL_S": "7200",
        # DIMSE is closed to AEs that are no peer: storescu (calling AE STORESCU) is the
        # site's modality here.
        "JIP_STORE__PEERS": '{"modality": {"ae_title": "STORESCU", "host": "127.0.0.1", "port": 104}}',
        "JIP_META__SERIES_QUIET_PERIOD_S": "3",
        "JIP_FLOW__RULE_INTERVAL_S": "1",
        "JIP_FLOW__AIRFLOW_PORT": str(airflow_port),
        # Operators run as JIP's user here: the test machine's Python may live where the
        # operator user cannot run it (/root); tests/flow/worker/test_operator_isolation.py
        # covers the isolation.
        "JIP_FLOW__OPERATOR_ISOLATION": "none",
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
            data={"grant_type": "password", "username": ADMIN, "password": PASSWORD,
                  "client_id": "jip-cli"},
        ).json()["access_token"]  # fmt: skip
        # Generous timeouts: Airflow's tasks share a CI machine's few cores with the API.
        auth = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=base, headers=auth, timeout=60) as api:
            yield UpSite(base, api, dicom_port, log)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)


@pytest.fixture(scope="session")
def up_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpSite]:
    yield from start_up_site(tmp_path_factory.mktemp("up-flow"))


@pytest.fixture(scope="session")
def abdomen_ct(up_site: UpSite, tmp_path_factory: pytest.TempPathFactory) -> AbdomenCt:
    return AbdomenCt(up_site, tmp_path_factory.mktemp("abdomen-ct"))


def run_shared_site_tests_last(items: list[pytest.Item]) -> None:
    """Move tests marked ``up_site_last`` to the end, keeping every other order."""
    items.sort(key=lambda item: item.get_closest_marker(LAST) is not None)
