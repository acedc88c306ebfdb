"""The embedded Airflow of `jip up`: its four processes, their start, health and stop.

Airflow runs as child processes (api-server, scheduler, dag-processor, triggerer) on a
SQLite metadata database with the LocalExecutor, each in a session of its own: a Ctrl-C
at the terminal reaches only `jip up`, which then stops them in order. Their output goes
to ``<AIRFLOW_HOME>/logs/components/<component>.log``, never to our stdout. Their
environment and JIP's password in Airflow come from :mod:`jip.flow.airflow_home`.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from jip.config import Settings, reachable_host
from jip.errors import Conflict, Unavailable
from jip.flow.airflow_home import airflow_environment, embedded_url, ensure_password

log = logging.getLogger(__name__)

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
# Components that fork task or parsing processes: they start with JIP's task modules
# imported, so each fork inherits them (see jip.flow.worker.preload).
_PRELOADING = frozenset({"scheduler", "dag-processor"})
_PRELOAD_MODULE = "jip.flow.worker.preload"
# The health endpoint's name for each component that reports a heartbeat.
_HEALTH_KEYS = {
    "scheduler": "scheduler",
    "dag_processor": "dag-processor",
    "triggerer": "triggerer",
}
# Stopped first, so that tasks ending meanwhile can still report to the api-server.
_STOP_ORDER = (("scheduler", "triggerer", "dag-processor"), ("api-server",))
# Names the Airflow version that last migrated the metadata database.
MIGRATED_MARKER = "jip-db-migrated"
HEALTH_PATH = "/api/v2/monitor/health"

# Defaults until FlowSettings has fields for them.
DEFAULT_STARTUP_TIMEOUT_S = 180.0
DEFAULT_STOP_GRACE_S = 20.0
DEFAULT_MIGRATE_TIMEOUT_S = 300.0


@dataclass
class _Component:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path


class EmbeddedAirflow:
    """Runs Airflow's four components for one JIP site; use it as a context manager.

    ``with EmbeddedAirflow(settings) as airflow:`` migrates the metadata database,
    starts the components, waits until Airflow reports them healthy, and stops them on
    exit (SIGTERM, then SIGKILL after ``stop_grace_s``).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S,
        stop_grace_s: float = DEFAULT_STOP_GRACE_S,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.settings = settings
        # Variables every component (and so every task) gets on top of ours: the
        # JIP_* settings tasks need to reach the site (see jip.flow.component).
        self.extra_env = dict(extra_env or {})
        self.startup_timeout_s = startup_timeout_s
        self.stop_grace_s = stop_grace_s
        self.home = settings.resolved_airflow_home.expanduser().resolve()
        self.url = embedded_url(settings)
        self.startup_s: float | None = None
        self._components: dict[str, _Component] = {}

    @property
    def log_dir(self) -> Path:
        return self.home / "logs" / "components"

    def log_path(self, component: str) -> Path:
        return self.log_dir / f"{component}.log"

    @property
    def pids(self) -> dict[str, int]:
        """The process id of each running component (for `jip status`)."""
        return {c.name: c.process.pid for c in self._components.values()}

    @property
    def running(self) -> bool:
        return bool(self._components) and all(
            c.process.poll() is None for c in self._components.values()
        )

    def __enter__(self) -> EmbeddedAirflow:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Migrate, start the components and return once Airflow is healthy."""
        if self._components:
            raise Conflict("the embedded Airflow is already started")
        self._refuse_taken_port()
        # Holds the metadata database, secrets (airflow.cfg) and the API password.
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        ensure_password(
            self.home, self.settings.flow.airflow_username, self.settings.flow.airflow_password
        )
        started = time.monotonic()
        env = airflow_environment(self.settings, dict(os.environ) | self.extra_env)
        self.migrate(env)
        try:
            for name in COMPONENTS:
                self._spawn(name, env)
            self.wait_healthy(deadline=started + self.startup_timeout_s)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - started
        log.info(
            "airflow healthy",
            extra={"url": self.url, "startup_s": round(self.startup_s, 1), "home": str(self.home)},
        )

    def migrate(self, env: dict[str, str]) -> None:
        """Create or upgrade the metadata database (``airflow db migrate``).

        Skipped when this Airflow version already migrated it: the command imports all
        of Airflow and takes seconds even when there is nothing to do.
        """
        marker = self.home / MIGRATED_MARKER
        version = f"apache-airflow=={importlib.metadata.version('apache-airflow')}"
        database = self.home / "airflow.db"
        if database.exists() and marker.exists() and marker.read_text().strip() == version:
            return
        started = time.monotonic()
        log_path = self.log_path("db-migrate")
        with log_path.open("ab") as out:
            try:
                result = subprocess.run(
                    [sys.executable, "-m", "airflow", "db", "migrate"],
                    env=env,
                    cwd=self.home,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=DEFAULT_MIGRATE_TIMEOUT_S,
                    check=False,
                )
            except subprocess.TimeoutExpired as exc:
                raise Unavailable(
                    f"`airflow db migrate` took longer than {exc.timeout:.0f} s; read {log_path}"
                ) from exc
        if result.returncode != 0:
            raise Unavailable(
                f"`airflow db migrate` failed with exit code {result.returncode}; "
                f"read {log_path}:\n{_tail(log_path)}"
            )
        marker.write_text(version + "\n")
        log.info(
            "airflow database migrated",
            extra={"version": version, "migrate_s": round(time.monotonic() - started, 1)},
        )

    def wait_healthy(self, deadline: float) -> None:
        """Poll Airflow's health endpoint until every component is healthy."""
        statuses: dict[str, str] = {}
        with httpx.Client(base_url=self.url, timeout=5.0) as client:
            while True:
                self._raise_if_exited()
                statuses = _component_health(client)
                if statuses and all(s == "healthy" for s in statuses.values()):
                    return
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.5)
        if not statuses:
            raise Unavailable(
                f"Airflow's api-server did not answer at {self.url} within "
                f"{self.startup_timeout_s:.0f} s; read {self.log_path('api-server')}"
            )
        waiting = [name for name in COMPONENTS if statuses.get(name) != "healthy"]
        logs = ", ".join(str(self.log_path(name)) for name in waiting)
        raise Unavailable(
            f"Airflow was not healthy after {self.startup_timeout_s:.0f} s "
            f"(not healthy: {', '.join(waiting)}); read {logs}"
        )

    def stop(self) -> None:
        """Stop every component: SIGTERM, then SIGKILL after the grace period.

        The scheduler waits for running tasks before it exits; a task still running
        when the grace period ends is killed with it (Airflow fails or retries it when
        it next starts).
        """
        for names in _STOP_ORDER:
            group = [self._components[n] for n in names if n in self._components]
            # Task processes run in sessions of their own, out of reach of killpg;
            # note them while their parents still know them.
            offspring = [p for c in group for p in _descendants(c.process.pid)]
            for component in group:
                if component.process.poll() is None:
                    _signal(component.process, signal.SIGTERM, group=False)
            deadline = time.monotonic() + self.stop_grace_s
            for component in group:
                try:
                    component.process.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    log.warning(
                        "airflow component did not stop, killing it",
                        extra={"component": component.name, "pid": component.process.pid},
                    )
                    _signal(component.process, signal.SIGKILL, group=True)
                    component.process.wait()
                _signal(component.process, signal.SIGKILL, group=True)
            for process in offspring:
                with contextlib.suppress(Exception):
                    process.kill()
        self._components.clear()

    def _spawn(self, name: str, env: dict[str, str]) -> None:
        log_path = self.log_path(name)
        with log_path.open("ab") as out:
            out.write(f"\n--- jip: starting airflow {name} at {time.ctime()} ---\n".encode())
            out.flush()
            module = _PRELOAD_MODULE if name in _PRELOADING else "airflow"
            process = subprocess.Popen(
                [sys.executable, "-m", module, name],
                env=env,
                cwd=self.home,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._components[name] = _Component(name=name, process=process, log_path=log_path)

    def _raise_if_exited(self) -> None:
        for component in self._components.values():
            code = component.process.poll()
            if code is not None:
                raise Unavailable(
                    f"Airflow {component.name} exited with code {code} while starting; "
                    f"read {component.log_path}:\n{_tail(component.log_path)}"
                )

    def _refuse_taken_port(self) -> None:
        host = reachable_host(self.settings.flow.airflow_host).strip("[]")
        port = self.settings.flow.airflow_port
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            raise Conflict(
                f"port {port} on {host} is already in use (flow.airflow_port); "
                "is another `jip up` running? `jip status`"
            )


def _component_health(client: httpx.Client) -> dict[str, str]:
    """Each component's health by our process names; empty while the API is not up."""
    try:
        response = client.get(HEALTH_PATH)
        body = response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return {}
    if not isinstance(body, dict):
        return {}
    # The api-server answers; it is healthy when it can reach the metadata database.
    statuses = {"api-server": _status(body, "metadatabase")}
    statuses.update({name: _status(body, key) for key, name in _HEALTH_KEYS.items()})
    return statuses


def _status(body: dict[str, object], key: str) -> str:
    entry = body.get(key)
    status = entry.get("status") if isinstance(entry, dict) else None
    return status if isinstance(status, str) else "unknown"


def _signal(process: subprocess.Popen[bytes], sig: signal.Signals, *, group: bool) -> None:
    # Every component leads its own process group (start_new_session), so its pid is
    # the group id; a group outlives its leader while task processes remain.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:
            os.killpg(process.pid, sig)
        else:
            process.send_signal(sig)


def _descendants(pid: int) -> list[Any]:
    """The live descendants of ``pid`` as psutil processes (safe against pid reuse)."""
    try:
        import psutil  # installed with Airflow; the REST adapter must not need it
    except ImportError:
        return []
    try:
        return list(psutil.Process(pid).children(recursive=True))
    except psutil.Error:
        return []


def _tail(path: Path, lines: int = 15) -> str:
    try:
        with path.open("rb") as file:
            file.seek(0, os.SEEK_END)
            file.seek(max(0, file.tell() - 8192))
            text = file.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
