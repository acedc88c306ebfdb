"""`jip up` starts the DICOM listener first: its processes import while the catalog is
recovered, acknowledge nothing before that, and the rest starts once they accept
associations; a kill -9 of the whole site loses no acknowledged instance.

Real peers: dcmtk's echoscu/storescu/findscu. No timing is asserted (see bench_startup).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
from tests.support.network import free_port

from jip.config import Settings, StoreSettings
from jip.runtime import build_runtime
from jip.samples import synthetic_site, write_datasets
from jip.store.dimse.listener import ListenerGroup, spool_dir

pytestmark = pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk is not installed")

JIP = [sys.executable, "-m", "jip.cli.main"]


def listener_settings(data_dir: Path) -> Settings:
    store = StoreSettings(dicom_host="127.0.0.1", dicom_port=free_port(), listener_processes=1)
    return Settings(data_dir=data_dir, store=store)


def pids_of(group: ListenerGroup) -> list[int]:
    pids: list[int] = group.describe()["pids"]  # type: ignore[assignment]
    return pids


def accepts_connections(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def echo(port: int) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["echoscu", "-aec", "JIP", "127.0.0.1", str(port)], capture_output=True, timeout=30
    )


def test_prepared_listener_processes_listen_only_once_started(tmp_path: Path) -> None:
    settings = listener_settings(tmp_path / "data")
    group = ListenerGroup(settings, build_runtime)
    group.prepare()
    try:
        time.sleep(1.0)  # give the processes time to do whatever they would do unasked
        assert group.not_ready() is not None
        assert all(psutil.pid_exists(pid) for pid in pids_of(group))
        assert not accepts_connections(settings.store.dicom_port)
        assert not spool_dir(settings).exists()

        build_runtime(settings).close()  # the recovery `jip up` runs before it starts them
        group.start()
        group.wait_ready(60)
        assert echo(settings.store.dicom_port).returncode == 0
    finally:
        group.stop()


def test_a_prepared_group_that_never_starts_stops(tmp_path: Path) -> None:
    group = ListenerGroup(listener_settings(tmp_path / "data"), build_runtime)
    group.prepare()
    pids = pids_of(group)
    assert pids
    group.stop()
    assert not any(psutil.pid_exists(pid) for pid in pids)


class Up:
    """`jip up --no-airflow` on one data directory, started and killed by the test."""

    def __init__(self, root: Path) -> None:
        self.data_dir, self.log = root / "data", root / "jip-up.log"
        self.http_port, self.dicom_port = free_port(), free_port()
        peers = {n.lower(): {"ae_title": n, "host": "127.0.0.1", "port": 9} for n in ("STORESCU", "FINDSCU")}  # fmt: skip
        self.env = {**os.environ, "JIP_AUTH__ENABLED": "false", "JIP_STORE__PEERS": json.dumps(peers)}  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [*JIP, "--data-dir", str(self.data_dir), "up", "--http-port", str(self.http_port),
                 "--dicom-port", str(self.dicom_port), "--listeners", "1", "--no-airflow"],
                stdout=out, stderr=subprocess.STDOUT, env=self.env,
            )  # fmt: skip
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"jip up exited:\n{self.log.read_text()[-6000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.http_port}/healthz", timeout=1).is_success:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        pytest.fail(f"jip up not healthy after 90 s:\n{self.log.read_text()[-6000:]}")

    def kill_9(self) -> None:
        """SIGKILL to `jip up` and its listener processes at once (a crash)."""
        assert self.process is not None
        tree = [psutil.Process(self.process.pid), *psutil.Process(self.process.pid).children(recursive=True)]  # fmt: skip
        for process in tree:
            process.kill()
        psutil.wait_procs(tree, timeout=30)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            assert self.process.wait(timeout=90) == 0, self.log.read_text()[-6000:]


def test_after_a_kill_9_the_listener_is_back_first_with_every_acknowledged_instance(
    tmp_path: Path,
) -> None:
    datasets = synthetic_site(patients=1, studies_per_patient=1, series_per_study=1, slices=3, seed=5)  # fmt: skip
    files = write_datasets(datasets, tmp_path / "study")
    up = Up(tmp_path)
    up.start()
    try:
        sent = subprocess.run(
            ["storescu", "-aec", "JIP", "127.0.0.1", str(up.dicom_port), *map(str, files)],
            capture_output=True, timeout=60,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        up.kill_9()
        restart_at = up.log.stat().st_size
        up.start()

        log = up.log.read_text()[restart_at:]
        ready = log.index("DICOM listener process ready")
        assert ready < log.index("starting meta") < log.index("JIP is up")
        found = subprocess.run(
            ["findscu", "-S", "-aec", "JIP", "-k", "QueryRetrieveLevel=STUDY",
             "-k", f"StudyInstanceUID={datasets[0].StudyInstanceUID}",
             "-k", "NumberOfStudyRelatedInstances", "127.0.0.1", str(up.dicom_port)],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert found.returncode == 0, found.stderr
        assert "[3 ]" in found.stdout + found.stderr  # NumberOfStudyRelatedInstances (IS, even)
    finally:
        up.stop()
