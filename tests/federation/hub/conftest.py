"""The ``running_hub`` fixture: a fresh hub per test, served over HTTPS on loopback by
uvicorn in a thread, with client certificates from its CA (see support.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from tests.federation.hub.support import MovableClock, RunningHub
from tests.support.network import free_port

from jip.federation.hub import add_researcher, init_hub, open_hub, server_config


@pytest.fixture
def running_hub(tmp_path: Path) -> Iterator[RunningHub]:
    clock = MovableClock()
    init_hub(tmp_path / "hub", ["hub.test"])
    hub = open_hub(tmp_path / "hub", clock=clock)
    token = add_researcher(hub, "rita")["token"]
    port = free_port()
    server = uvicorn.Server(server_config(hub, "127.0.0.1", port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the hub did not start"
        time.sleep(0.05)
    running = RunningHub(f"https://127.0.0.1:{port}", hub, clock, tmp_path, token)
    try:
        yield running
    finally:
        running.close()
        server.should_exit = True
        thread.join(10)
        hub.close()
