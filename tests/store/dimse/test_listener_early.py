"""`jip up` starts its first DICOM listener interpreter before it parses its options:
which command lines do, that the group adopts it only where it fits, that it binds
nothing before the group starts it, and that the other processes follow once it accepts.

Real listener processes and dcmtk's echoscu; no timing is asserted (bench_startup).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from tests.support.network import free_port

from jip.cli.main import start_listener_early
from jip.config import Settings, StoreSettings
from jip.runtime import build_store_runtime, recover
from jip.store.dimse import listener
from jip.store.dimse.listener import ListenerGroup, discard_early, prespawn


@pytest.fixture
def spawned(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The data directories `start_listener_early` would prespawn for (none started)."""
    calls: list[Path] = []
    monkeypatch.setattr(listener, "prespawn", calls.append)
    monkeypatch.delenv("JIP_DATA_DIR", raising=False)
    monkeypatch.delenv("JIP_CONFIG", raising=False)
    return calls


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--data-dir", "/srv/a", "up", "--no-airflow"], "/srv/a"),
        (["--data-dir=/srv/b", "up", "--role", "dicom"], "/srv/b"),
        (["up", "--role=all", "--listeners", "2"], "jip-data"),
        (["up", "--help"], None),
        (["up", "--migrate-only"], None),
        (["up", "--role", "meta"], None),
        (["up", "--role=api"], None),
        (["status"], None),
        (["--help"], None),
        (["--data-dir", "/srv/a"], None),
        ([], None),
    ],
)
def test_only_a_jip_up_that_runs_a_listener_starts_one_early(
    spawned: list[Path], args: list[str], expected: str | None
) -> None:
    start_listener_early(args)
    assert spawned == ([Path(expected)] if expected else [])


def test_the_data_dir_comes_from_the_environment_and_a_yaml_file_is_not_guessed(
    spawned: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JIP_CONFIG", "/etc/jip.yaml")
    start_listener_early(["up"])
    assert spawned == []  # the YAML may name the data directory
    monkeypatch.setenv("JIP_DATA_DIR", "/srv/env")
    start_listener_early(["up"])
    assert spawned == [Path("/srv/env")]


def test_a_data_dir_it_cannot_create_is_left_to_jip_up_to_report(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    start_listener_early(["--data-dir", str(blocked / "data"), "up"])
    assert listener._early is None


def settings_for(data_dir: Path, processes: int = 1) -> Settings:
    store = StoreSettings(
        dicom_host="127.0.0.1", dicom_port=free_port(), listener_processes=processes
    )
    return Settings(data_dir=data_dir, store=store)


def accepts_connections(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def early_pid() -> int:
    assert listener._early is not None
    return listener._early[0].pid


@pytest.mark.skipif(shutil.which("echoscu") is None, reason="dcmtk is not installed")
def test_the_group_adopts_the_early_process_and_starts_the_rest_once_it_accepts(
    tmp_path: Path,
) -> None:
    settings = settings_for(tmp_path / "data", processes=2)
    prespawn(settings.data_dir)
    first = early_pid()
    group = ListenerGroup(settings, build_store_runtime)
    try:
        group.prepare()
        assert group.describe()["pids"] == [first]  # adopted; the others wait for it
        time.sleep(1.0)  # whatever it would do unasked, it has had time to do
        assert not accepts_connections(settings.store.dicom_port)
        recover(settings)
        group.start()
        group.wait_ready(60)
        pids = group.describe()["pids"]
        assert isinstance(pids, list) and len(pids) == 2 and pids[0] == first
        echo = ["echoscu", "-aec", "JIP", "127.0.0.1", str(settings.store.dicom_port)]
        assert subprocess.run(echo, capture_output=True, timeout=30).returncode == 0
    finally:
        group.stop()
    assert not psutil.pid_exists(first)


def test_an_early_process_for_another_data_dir_leaves_and_another_serves(
    tmp_path: Path,
) -> None:
    settings = settings_for(tmp_path / "data")
    prespawn(tmp_path / "guessed")  # JIP_CONFIG named another place, say
    guessed = early_pid()
    group = ListenerGroup(settings, build_store_runtime)
    try:
        group.prepare()
        assert not psutil.pid_exists(guessed)
        assert group.describe()["pids"] != [guessed]
        recover(settings)
        group.start()
        group.wait_ready(60)
        assert accepts_connections(settings.store.dicom_port)
    finally:
        group.stop()


def test_an_early_process_no_group_adopts_leaves(tmp_path: Path) -> None:
    prespawn(tmp_path / "data")
    pid = early_pid()
    discard_early()
    assert listener._early is None and not psutil.pid_exists(pid)
    discard_early()  # nothing left: nothing to do
