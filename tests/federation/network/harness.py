"""A research network on one machine: a hub (`jip hub up`) and sites (`jip up`), each its
own process with its own data dir, driven through the CLI as people would.

As root, each site can live in a network namespace of its own (:class:`Netns`): a veth
pair to the host, and iptables rules inside the namespace that let the site open
connections to the hub's port only and let nothing open a connection into the site.
Without root (or without ``ip netns``), everything runs on loopback.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from tests.support.network import free_port
from tests.up_site import wait_for

from jip.config import Settings
from jip.meta import Indexer
from jip.runtime import build_runtime

JIP = [sys.executable, "-m", "jip.cli.main"]
T = TypeVar("T")


def run(cmd: Sequence[str], env: dict[str, str] | None = None, timeout: float = 180) -> str:
    """Run a command; fail the test with its output when it fails; its stdout."""
    done = subprocess.run(
        list(cmd), capture_output=True, text=True, timeout=timeout, env=env or dict(os.environ)
    )
    if done.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def netns_unavailable() -> str | None:
    """Why sites cannot get namespaces here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian: iproute2, iptables)"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    return None if probe.returncode == 0 else f"ip netns: {probe.stderr.strip()}"


@dataclass
class Netns:
    """One site's namespace: ``host_ip`` is the host's end (where the hub listens),
    ``site_ip`` the site's; only ``host_ip:hub_port`` is reachable from inside."""

    name: str
    index: int
    hub_port: int

    @property
    def host_ip(self) -> str:
        return f"10.231.{self.index}.1"

    @property
    def site_ip(self) -> str:
        return f"10.231.{self.index}.2"

    def create(self) -> None:
        host_end, site_end = f"jh{self.index}", f"js{self.index}"
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
        subprocess.run(["ip", "link", "del", host_end], capture_output=True)
        for cmd in (
            ["ip", "netns", "add", self.name],
            ["ip", "link", "add", host_end, "type", "veth", "peer", "name", site_end],
            ["ip", "link", "set", site_end, "netns", self.name],
            ["ip", "addr", "add", f"{self.host_ip}/24", "dev", host_end],
            ["ip", "link", "set", host_end, "up"],
            self.wrap(["ip", "addr", "add", f"{self.site_ip}/24", "dev", site_end]),
            self.wrap(["ip", "link", "set", site_end, "up"]),
            self.wrap(["ip", "link", "set", "lo", "up"]),
        ):
            run(cmd)
        established = ["-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"]
        rules = [
            ["-A", "INPUT", "-i", "lo", "-j", "ACCEPT"],
            ["-A", "INPUT", *established],
            ["-P", "INPUT", "DROP"],
            ["-A", "OUTPUT", "-o", "lo", "-j", "ACCEPT"],
            ["-A", "OUTPUT", *established],
            ["-A", "OUTPUT", "-p", "tcp", "-d", self.host_ip, "--dport", str(self.hub_port),
             "-j", "ACCEPT"],
            ["-P", "OUTPUT", "DROP"],
        ]  # fmt: skip
        for rule in rules:
            run(self.wrap(["iptables", *rule]))

    def wrap(self, cmd: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *cmd]

    def delete(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
        subprocess.run(["ip", "link", "del", f"jh{self.index}"], capture_output=True)


class Process:
    """A long-running CLI process with its log; stopped with SIGTERM, or killed."""

    def __init__(self, cmd: Sequence[str], log: Path, env: dict[str, str]) -> None:
        self.cmd, self.log, self.env = list(cmd), log, env
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                self.cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                start_new_session=True,
            )  # fmt: skip

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self) -> None:
        """kill -9, the whole process group (listener and agent threads die with it)."""
        if self.popen is not None and self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=30)

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class HubProcess:
    """`jip hub up` in ``root`` listening on ``host`` (all namespaces' host ends)."""

    root: Path
    names: tuple[str, ...]
    port: int = field(default_factory=lambda: free_port("0.0.0.0"))
    process: Process | None = None

    @property
    def data_dir(self) -> Path:
        return self.root / "hub"

    @property
    def ca(self) -> Path:
        return self.data_dir / "ca.pem"

    def cli(self, *args: str) -> str:
        return run([*JIP, "hub", *args, "--data-dir", str(self.data_dir)])

    def init(self) -> None:
        hosts = [arg for name in self.names for arg in ("--host", name)]
        self.cli("init", *hosts)

    def start(self) -> None:
        cmd = [*JIP, "hub", "up", "--data-dir", str(self.data_dir), "--host", "0.0.0.0",
               "--port", str(self.port)]  # fmt: skip
        self.process = Process(cmd, self.root / "hub.log", dict(os.environ))
        self.process.start()

        def listening() -> bool | None:
            assert self.process is not None and self.process.alive(), self.log_tail()
            import socket

            with socket.socket() as probe:
                probe.settimeout(1)
                return True if probe.connect_ex(("127.0.0.1", self.port)) == 0 else None

        wait_for("the hub to listen", listening, self.root / "hub.log", 60)

    def log_tail(self) -> str:
        log = self.root / "hub.log"
        return log.read_text(errors="replace")[-4000:] if log.exists() else ""

    def add_site(self, name: str) -> str:
        token: str = json.loads(self.cli("site", "add", name, "--json"))["token"]
        return token

    def add_researcher(self, name: str) -> str:
        token: str = json.loads(self.cli("researcher", "add", name, "--json"))["token"]
        return token

    def sites(self) -> list[dict[str, Any]]:
        listed: list[dict[str, Any]] = json.loads(self.cli("site", "list", "--json"))
        return listed


@dataclass
class SiteProcess:
    """One site: its data dir prepared in-process, then `jip up` (no Airflow) as its own
    process, in its namespace when it has one."""

    root: Path
    name: str
    netns: Netns | None = None
    process: Process | None = None
    http_port: int = field(default_factory=free_port)
    dicom_port: int = field(default_factory=free_port)

    @property
    def data_dir(self) -> Path:
        return self.root / self.name

    @property
    def hub_host(self) -> str:
        return self.netns.host_ip if self.netns else "127.0.0.1"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "JIP_DATA_DIR": str(self.data_dir),
            "JIP_AUTH__ADMIN_PASSWORD": "network-admin-password-1",
            "JIP_FLOW__OPERATOR_ISOLATION": "none",
            "JIP_FEDERATION__WAIT_S": "2",
        }

    def wrap(self, cmd: Sequence[str]) -> list[str]:
        return self.netns.wrap(cmd) if self.netns else list(cmd)

    def ingest(self, files: Sequence[Path]) -> None:
        """Store and index ``files`` before the site runs (as its PACS would have)."""
        runtime = build_runtime(Settings(data_dir=self.data_dir, auth={"enabled": False}))
        try:
            for path in files:
                runtime.ingestor.ingest_file(path)
            Indexer(catalog=runtime.catalog, storage=runtime.storage, index=runtime.index).drain()
        finally:
            runtime.close()

    def cli(self, *args: str) -> str:
        return run(self.wrap([*JIP, "--data-dir", str(self.data_dir), *args]), env=self.env())

    def start(self) -> None:
        # In its namespace the site listens on every address: the test that the hub
        # cannot connect in must meet the firewall, not a loopback-only bind.
        host = "0.0.0.0" if self.netns else "127.0.0.1"
        cmd = self.wrap([*JIP, "--data-dir", str(self.data_dir), "up", "--no-airflow",
                         "--http-host", host, "--http-port", str(self.http_port),
                         "--dicom-port", str(self.dicom_port), "--listeners", "1"])  # fmt: skip
        self.process = Process(cmd, self.root / f"{self.name}.log", self.env())
        self.process.start()

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
