"""Fixtures of the DIMSE tests: a running listener and real peers (dcmtk, Orthanc).

- ``make_listener(**store)``: JIP's :class:`~jip.store.dimse.listener.ListenerGroup` (real
  listener processes) on a free port in a temp data dir, migrated as `jip up` does.
- ``make_storescp(aet)``: dcmtk's storescp writing what it receives to a folder.
- ``make_orthanc(modalities)``: Orthanc from a generated JSON config on free ports,
  with a temp storage dir; its DICOM peers are ``modalities``, DICOMweb off unless
  asked for.

Tests marked ``dcmtk`` or ``orthanc`` are skipped, saying why, when the binary is
missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.support.network import free_port

from jip.config import AuthSettings, DicomPeer, Settings, StoreSettings
from jip.runtime import Runtime, build_runtime
from jip.store.dimse.ae import build_ae, start_server
from jip.store.dimse.listener import ListenerGroup

ORTHANC_PLUGINS = Path("/usr/share/orthanc/plugins")


def orthanc_binary() -> str | None:
    return shutil.which("Orthanc") or (
        "/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").exists() else None
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("dcmtk") and shutil.which("storescu") is None:
        pytest.skip("dcmtk command-line tools (storescu, findscu, movescu, ...) not installed")
    if item.get_closest_marker("orthanc") and orthanc_binary() is None:
        pytest.skip("Orthanc is not installed (apt install orthanc orthanc-dicomweb)")


def wait_for_port(port: int, timeout_s: float = 30, process: subprocess.Popen[Any] | None = None) -> None:  # fmt: skip
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout_s} s")


# -- JIP's listener ------------------------------------------------------------------------------
@dataclass
class Listener:
    settings: Settings  # with the port the group actually listens on
    runtime: Runtime  # the parent's view of the site's catalog and storage
    group: ListenerGroup

    @property
    def port(self) -> int:
        return self.group.port

    @property
    def ae_title(self) -> str:
        return self.settings.store.ae_title

    def peer(self) -> DicomPeer:
        return DicomPeer(ae_title=self.ae_title, host="127.0.0.1", port=self.port)

    def instance_count(self) -> int:
        return self.runtime.catalog.counts()["instances"]

    def stored_path(self, sop_instance_uid: str) -> Path:
        key = self.runtime.catalog.instance(sop_instance_uid).blob_key
        path = self.runtime.storage.local_path(key)
        assert path is not None
        return path


@contextlib.contextmanager
def running_listener(data_dir: Path, processes: int = 1, **store: Any) -> Iterator[Listener]:
    store.setdefault("network_timeout_s", 10)
    store.setdefault("dicom_port", 0)
    settings = Settings(
        data_dir=data_dir,
        store=StoreSettings(dicom_host="127.0.0.1", listener_processes=processes, **store),
        auth=AuthSettings(enabled=False),
    )
    runtime = build_runtime(settings)  # migrates, as `jip up` does before starting it
    group = ListenerGroup(settings, build_runtime)
    try:
        group.start()
        group.wait_ready(90)
        actual = settings.model_copy(
            update={"store": settings.store.model_copy(update={"dicom_port": group.port})}
        )
        yield Listener(actual, runtime, group)
    finally:
        group.stop()
        runtime.close()


@pytest.fixture
def make_listener(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Listener]]:
    with contextlib.ExitStack() as stack:

        def make(processes: int = 1, **store: Any) -> Listener:
            data_dir = tmp_path_factory.mktemp("jip-data")
            return stack.enter_context(running_listener(data_dir, processes, **store))

        yield make


@pytest.fixture(scope="module")
def make_module_listener(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., Listener]]:
    """As ``make_listener``, for a listener that a whole test module shares."""
    with contextlib.ExitStack() as stack:

        def make(processes: int = 1, **store: Any) -> Listener:
            data_dir = tmp_path_factory.mktemp("jip-data")
            return stack.enter_context(running_listener(data_dir, processes, **store))

        yield make


@pytest.fixture
def listener(make_listener: Callable[..., Listener]) -> Listener:
    return make_listener()


# -- dcmtk's storescp ---------------------------------------------------------------------------
@dataclass
class StoreSCP:
    ae_title: str
    port: int
    folder: Path

    def peer(self) -> DicomPeer:
        return DicomPeer(ae_title=self.ae_title, host="127.0.0.1", port=self.port)

    def files(self) -> list[Path]:
        return sorted(p for p in self.folder.rglob("*") if p.is_file())


@contextlib.contextmanager
def running_storescp(folder: Path, ae_title: str = "DEST") -> Iterator[StoreSCP]:
    """storescp accepting every storage SOP class in every transfer syntax (+xa)."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    process = subprocess.Popen(
        ["storescp", "-aet", ae_title, "+xa", "-od", str(folder), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "TCP_NODELAY": "1"},
    )
    try:
        wait_for_port(port, process=process)
        yield StoreSCP(ae_title, port, folder)
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="module")
def make_storescp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., StoreSCP]]:
    with contextlib.ExitStack() as stack:

        def make(ae_title: str = "DEST") -> StoreSCP:
            folder = tmp_path_factory.mktemp("storescp")
            return stack.enter_context(running_storescp(folder, ae_title))

        yield make


# -- Orthanc ------------------------------------------------------------------------------------
@dataclass
class Orthanc:
    ae_title: str
    dicom_port: int
    url: str

    def peer(self) -> DicomPeer:
        return DicomPeer(ae_title=self.ae_title, host="127.0.0.1", port=self.dicom_port)

    def get(self, path: str) -> Any:
        response = httpx.get(f"{self.url}{path}", timeout=60)
        response.raise_for_status()
        return (
            response.json()
            if "json" in response.headers.get("content-type", "")
            else response.content
        )

    def post(self, path: str, body: Any) -> Any:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        response = httpx.post(f"{self.url}{path}", content=content, timeout=120)
        response.raise_for_status()
        return response.json()

    def upload(self, data: bytes) -> str:
        """Store a Part 10 file through the REST API; returns Orthanc's instance id."""
        return str(self.post("/instances", data)["ID"])


@contextlib.contextmanager
def running_orthanc(
    workdir: Path,
    modalities: dict[str, DicomPeer],
    dicomweb: bool = False,
    dicom_port: int | None = None,
) -> Iterator[Orthanc]:
    binary = orthanc_binary()
    assert binary is not None
    http_port, dicom_port = free_port(), dicom_port or free_port()
    plugins = [str(ORTHANC_PLUGINS / "libOrthancDicomWeb.so")] if dicomweb else []
    config = {
        "Name": "hospital-pacs",
        "StorageDirectory": str(workdir / "storage"),
        "IndexDirectory": str(workdir / "index"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": "ORTHANC",
        "DicomCheckCalledAet": False,
        "RemoteAccessAllowed": True,
        "AuthenticationEnabled": False,
        "Plugins": plugins,
        "DicomModalities": {
            name: [peer.ae_title, peer.host, peer.port] for name, peer in modalities.items()
        },
        "DicomWeb": {"Enable": dicomweb},
    }
    config_path = workdir / "orthanc.json"
    config_path.write_text(json.dumps(config, indent=2))
    log = (workdir / "orthanc.log").open("wb")
    process = subprocess.Popen(
        [binary, str(config_path)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "TCP_NODELAY": "1"},  # dcmtk keeps Nagle on otherwise
    )
    try:
        wait_for_port(http_port, process=process)
        wait_for_port(dicom_port, process=process)
        yield Orthanc("ORTHANC", dicom_port, f"http://127.0.0.1:{http_port}")
    finally:
        process.terminate()
        process.wait(30)
        log.close()


@pytest.fixture(scope="module")
def make_orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Orthanc]]:
    with contextlib.ExitStack() as stack:

        def make(
            modalities: dict[str, DicomPeer], dicomweb: bool = False, dicom_port: int | None = None
        ) -> Orthanc:
            workdir = tmp_path_factory.mktemp("orthanc")
            return stack.enter_context(running_orthanc(workdir, modalities, dicomweb, dicom_port))

        yield make


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[Settings, int, object]]:
    """The site's AE served in-process (no listener processes): (settings, port, server)."""
    settings = Settings(
        data_dir=tmp_path,
        store=StoreSettings(dicom_host="127.0.0.1", dicom_port=0),
        auth=AuthSettings(enabled=False),
    )
    runtime = build_runtime(settings)
    ae = build_ae(settings.store)
    running = start_server(ae, runtime, "127.0.0.1", 0)
    try:
        yield settings, running.server_address[1], running
    finally:
        running.shutdown()
        runtime.close()
