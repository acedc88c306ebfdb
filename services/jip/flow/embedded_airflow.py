"""The embedded Airflow of `jip up`: its environment, its four processes, their health.

Airflow runs as child processes (api-server, scheduler, dag-processor, triggerer) on a
SQLite metadata database with the LocalExecutor, each in a session of its own: a Ctrl-C
at the terminal reaches only `jip up`, which then stops them in order. Their output goes
to ``<AIRFLOW_HOME>/logs/components/<component>.log``, never to our stdout.

JIP signs in to Airflow's API as its own user (``flow.airflow_username``, role admin)
with a password generated once and stored, mode 0600, in the simple auth manager's
password file in AIRFLOW_HOME: the one file Airflow itself reads it from.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
import os
import secrets
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

from jip.config import Settings
from jip.errors import Conflict, Unavailable

log = logging.getLogger(__name__)

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
# The health endpoint's name for each component that reports a heartbeat.
_HEALTH_KEYS = {
    "scheduler": "scheduler",
    "dag_processor": "dag-processor",
    "triggerer": "triggerer",
}
# Stopped first, so that tasks ending meanwhile can still report to the api-server.
_STOP_ORDER = (("scheduler", "triggerer", "dag-processor"), ("api-server",))
PASSWORDS_FILE_NAME = "simple_auth_manager_passwords.json.generated"
# Names the Airflow version that last migrated the metadata database.
MIGRATED_MARKER = "jip-db-migrated"
HEALTH_PATH = "/api/v2/monitor/health"

# Defaults until FlowSettings has fields for them.
DEFAULT_STARTUP_TIMEOUT_S = 180.0
DEFAULT_STOP_GRACE_S = 20.0
DEFAULT_MIGRATE_TIMEOUT_S = 300.0
# New DAG files appear within this many seconds; a changed file is re-parsed within
# MIN_FILE_PROCESS_INTERVAL_S (each parse costs a process start, so not too often).
DAGS_REFRESH_INTERVAL_S = 10
MIN_FILE_PROCESS_INTERVAL_S = 30


def repository_dags_folder() -> Path:
    """``dags/`` of the checkout this package runs from (services/jip/flow/ -> repo root)."""
    return Path(__file__).resolve().parents[3] / "dags"


def dags_folder(settings: Settings) -> Path:
    return (settings.flow.dags_folder or repository_dags_folder()).expanduser().resolve()


def api_url(settings: Settings) -> str:
    """Where Airflow's API answers: the configured external URL or the embedded one."""
    if settings.flow.airflow_url:
        return settings.flow.airflow_url.rstrip("/")
    return embedded_url(settings)


def embedded_url(settings: Settings) -> str:
    """Where the embedded Airflow's api-server answers."""
    return f"http://{_client_host(settings.flow.airflow_host)}:{settings.flow.airflow_port}"


def _client_host(bind_host: str) -> str:
    # A server bound to every interface is reached over loopback.
    if bind_host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{bind_host}]" if ":" in bind_host else bind_host


def passwords_file(airflow_home: Path) -> Path:
    return airflow_home / PASSWORDS_FILE_NAME


def read_password(airflow_home: Path, username: str) -> str | None:
    """The stored password of ``username``, or None when there is none yet."""
    path = passwords_file(airflow_home)
    try:
        passwords = json.loads(path.read_text() or "{}")
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise Unavailable(f"cannot read Airflow passwords file {path}: {exc}") from exc
    password = passwords.get(username)
    return password if isinstance(password, str) else None


def ensure_password(airflow_home: Path, username: str, password: str | None = None) -> str:
    """Store ``password`` (or a generated one, once) for ``username``; return it.

    The file is written atomically with mode 0600; other users' entries are kept.
    """
    path = passwords_file(airflow_home)
    passwords: dict[str, str] = {}
    exists = path.exists()
    if exists:
        try:
            passwords = json.loads(path.read_text() or "{}")
        except ValueError as exc:
            raise Unavailable(f"Airflow passwords file {path} is not JSON: {exc}") from exc
    wanted = password or passwords.get(username) or secrets.token_urlsafe(24)
    if not exists or passwords.get(username) != wanted or path.stat().st_mode & 0o077:
        passwords[username] = wanted
        tmp = path.with_name(path.name + ".tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(json.dumps(passwords) + "\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    return wanted


def airflow_environment(settings: Settings, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment every embedded Airflow process runs with.

    ``base`` (normally the parent's environment) is kept, so an admin can still tune
    Airflow with ``AIRFLOW__SECTION__KEY`` variables that JIP does not set.
    """
    home = settings.resolved_airflow_home.expanduser().resolve()
    flow = settings.flow
    # Tasks at once, each a process: the site machine also runs store and meta.
    parallel = str(flow.max_parallel_series)
    env = dict(base or {})
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW_CONFIG": str(home / "airflow.cfg"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder(settings)),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__PARALLELISM": parallel,
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": parallel,
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{flow.airflow_username}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file(home)),
            # Task processes report to the api-server's execution API; it is not on the
            # default port 8080.
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{embedded_url(settings)}/execution/",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__API__HOST": flow.airflow_host,
            "AIRFLOW__API__PORT": str(flow.airflow_port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": str(DAGS_REFRESH_INTERVAL_S),
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": str(MIN_FILE_PROCESS_INTERVAL_S),
            # Default is <tmp>/airflow, shared by every Airflow on the machine.
            "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_STORAGE_PATH": str(home / "dag-bundles"),
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            "AIRFLOW__SCHEDULER__CATCHUP_BY_DEFAULT": "False",
        }
    )
    return env


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
            process = subprocess.Popen(
                [sys.executable, "-m", "airflow", name],
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
        host = _client_host(self.settings.flow.airflow_host).strip("[]")
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
