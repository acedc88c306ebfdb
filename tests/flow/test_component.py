"""The flow's parts of `jip up`: which components run, and a real `jip up` with Airflow."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
from tests.support.network import free_port

from jip.config import FlowSettings, Settings
from jip.embedded import embedded_components
from jip.flow.component import task_environment

JIP = [sys.executable, "-m", "jip.cli.main"]


def test_airflow_and_rules_run_unless_turned_off(tmp_path: Path) -> None:
    def flow_parts(settings: Settings) -> list[str]:
        names = [c.name for c in embedded_components(settings)]
        return [n for n in names if n in ("airflow", "rules")]

    assert flow_parts(Settings(data_dir=tmp_path)) == ["airflow", "rules"]
    off = Settings(data_dir=tmp_path, flow=FlowSettings(airflow_enabled=False))
    assert flow_parts(off) == []
    external = Settings(data_dir=tmp_path, flow=FlowSettings(airflow_url="http://airflow:8080"))
    assert flow_parts(external) == ["rules"]


def test_tasks_get_the_settings_that_reach_this_site(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path, http_port=8123, api_token="t0k", flow=FlowSettings(runner="container")
    )
    env = task_environment(settings)
    assert env["JIP_API_URL"] == "http://127.0.0.1:8123"
    assert env["JIP_API_TOKEN"] == "t0k"
    assert env["JIP_FLOW__RUNNER"] == "container"
    assert env["JIP_FLOW__WORK_DIR"] == str(tmp_path / "flow-work")
    assert env["JIP_RESULTS_URL"] == (tmp_path / "results").as_uri()


@pytest.mark.slow
def test_jip_up_runs_airflow_reports_it_and_stops_it_on_sigterm(tmp_path: Path) -> None:
    data_dir, log = tmp_path / "data", tmp_path / "jip-up.log"
    http_port = free_port()
    env = {
        **os.environ,
        "JIP_AUTH__ENABLED": "false",
        "JIP_FLOW__AIRFLOW_PORT": str(free_port()),
        # This machine's Python lives under /root, which the operators' user cannot
        # enter; tests/flow/worker/test_operator_isolation.py covers the isolation.
        "JIP_FLOW__OPERATOR_ISOLATION": "none",
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*JIP, "--data-dir", str(data_dir), "up", "--http-port", str(http_port),
             "--dicom-port", str(free_port()), "--listeners", "1"],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while True:
            if process.poll() is not None:
                pytest.fail(f"jip up exited early:\n{log.read_text()}")
            try:
                if httpx.get(f"http://127.0.0.1:{http_port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"jip up not healthy after 240 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        status = subprocess.run(
            [*JIP, "--data-dir", str(data_dir), "status", "--json"],
            capture_output=True, text=True, check=True, env=env,
        )  # fmt: skip
        components = json.loads(status.stdout)["components"]
        airflow = components["airflow"]
        assert set(airflow["pids"]) == {"api-server", "scheduler", "dag-processor", "triggerer"}
        assert airflow["url"] == f"http://127.0.0.1:{env['JIP_FLOW__AIRFLOW_PORT']}"
        assert Path(airflow["log_dir"]).is_dir()
        assert "rules" in components
        pids = list(airflow["pids"].values())
        assert all(psutil.pid_exists(pid) for pid in pids)
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=120)
    text = log.read_text()
    assert code == 0, text[-3000:]
    assert "stopping airflow" in text and "JIP stopped" in text
    assert not [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
    assert not (data_dir / "jip-up.json").exists()
