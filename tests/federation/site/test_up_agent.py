"""The federation agent inside a real `jip up`: it starts when the site has joined a hub,
`jip status` shows it with its last error, and a `kill -9` of the whole site (after a
job was acknowledged, then right after it was approved) neither loses the job nor
sends the hub a second, different result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import psutil
import pytest
from tests.federation.site.fakehub import FakeHub, running_hub
from tests.federation.site.support import Researcher, Site, ages, make_site, open_policy
from tests.support.network import free_port

from jip.config import FederationSettings, Settings
from jip.embedded import embedded_components
from jip.federation.site import SiteFiles, approve
from jip.runtime import build_runtime

JIP = [sys.executable, "-m", "jip.cli.main"]
T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], log: Path, timeout_s: float = 60) -> T:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = probe()
        if value is not None and value is not False:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}; jip up log:\n{log.read_text()[-6000:]}")


@dataclass
class Up:
    """One `jip up` of the site's data dir, started and killed by the test."""

    data_dir: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {
            **os.environ,
            "JIP_AUTH__ENABLED": "false",
            "JIP_FLOW__OPERATOR_ISOLATION": "none",
            "JIP_FEDERATION__WAIT_S": "1",
            "JIP_FEDERATION__BACKOFF_BASE_S": "0.2",
            "JIP_FEDERATION__BACKOFF_CAP_S": "1",
        }
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [*JIP, "--data-dir", str(self.data_dir), "up", "--http-port", str(free_port()),
                 "--dicom-port", str(free_port()), "--listeners", "1", "--no-airflow"],
                stdout=out, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip
        wait_for("jip up to write its state", self.agent_state, self.log)

    def agent_state(self) -> dict[str, object] | None:
        """What the state file `jip status` reads says of the federation agent."""
        if self.process is not None and self.process.poll() is not None:
            pytest.fail(f"jip up exited:\n{self.log.read_text()[-6000:]}")
        try:
            state = json.loads((self.data_dir / "jip-up.json").read_text())
        except (FileNotFoundError, ValueError):
            return None
        if state["pid"] != getattr(self.process, "pid", None):
            return None  # the state a killed `jip up` left behind
        found: dict[str, object] = state["components"]["federation"]
        return found

    def kill_9(self) -> None:
        assert self.process is not None
        children = psutil.Process(self.process.pid).children(recursive=True)
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        for child in children:  # the DICOM listener leaves once it sees its parent gone
            try:
                child.wait(timeout=30)
            except psutil.TimeoutExpired:
                child.kill()

    def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=90)


def test_jip_up_runs_the_agent_only_once_the_site_has_joined(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", auth={"enabled": False})
    runtime = build_runtime(settings)
    try:
        names = [c.name for c in embedded_components(settings, runtime=runtime)]
        assert "federation" not in names  # not joined
        files = SiteFiles.of(settings.data_dir)
        files.root.mkdir(parents=True)
        files.hub_json.write_text(json.dumps({"hub_url": "https://hub", "site_id": "s1"}))
        names = [c.name for c in embedded_components(settings, runtime=runtime)]
        assert names[-1] == "federation"  # started last, stopped first
        off = settings.model_copy(update={"federation": FederationSettings(enabled=False)})
        assert "federation" not in [c.name for c in embedded_components(off, runtime=runtime)]
    finally:
        runtime.close()


@pytest.mark.slow
def test_a_kill_9_of_jip_up_neither_loses_nor_repeats_a_job(tmp_path: Path) -> None:
    with running_hub(tmp_path) as hub:
        site = make_site(tmp_path / "data", hub, ages(60))
        try:
            kill_and_resume(tmp_path, hub, site)
        finally:
            site.index.close()
            site.engine.dispose()


def kill_and_resume(tmp_path: Path, hub: FakeHub, site: Site) -> None:
    researcher = Researcher.new()
    open_policy(site, researcher, approval="manual")
    site_id = site.files.hub()["site_id"]
    up = Up(site.data_dir, tmp_path / "jip-up.log")
    up.start()
    healthy = {"hub": hub.url, "site_id": site_id, "last_error": None}
    status = subprocess.run(
        [*JIP, "--data-dir", str(site.data_dir), "status", "--json"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert json.loads(status.stdout)["components"]["federation"] == healthy

    # The hub fails: `jip status` shows the agent's error, then that it recovered.
    hub.fail_next = 10_000
    wait_for("the error in jip status", lambda: (up.agent_state() or {}).get("last_error"), up.log)
    hub.fail_next = 0
    wait_for("the agent to recover", lambda: up.agent_state() == healthy, up.log)

    # Killed once the job is acknowledged (so persisted): the hub will not send it again.
    job = researcher.job()
    hub.jobs.append(job)
    wait_for("the ack", lambda: job.id in hub.acked.get(site_id, set()), up.log)
    up.kill_9()
    up.start()
    wait_for("the queued state", lambda: hub.state_of(job.id) == "queued", up.log)

    # Killed right after the approval: approved, running, or done and not yet posted.
    approve(site.engine, job.id, "cli:admin")
    up.kill_9()
    up.start()
    wait_for("the result", lambda: hub.state_of(job.id) == "done", up.log)
    assert list(hub.results) == [(job.id, site_id, 1)]
    assert len(site.audit("fed.result.released")) == 1  # computed once
    assert site.audit("fed.result.conflict") == []  # any repost carried the same bytes
    assert [a["round"] for a in site.audit("fed.job.received")] == [1]
    assert up.stop() == 0, up.log.read_text()[-6000:]
    assert not (site.data_dir / "jip-up.json").exists()
