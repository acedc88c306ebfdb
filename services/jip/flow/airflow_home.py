"""Where Airflow lives for one site: its URL, its environment, JIP's password there.

The supervisor of `jip up` (:mod:`jip.flow.embedded_airflow`) starts Airflow with
:func:`airflow_environment`; the REST adapter (:mod:`jip.flow.engine_airflow`) finds it
with :func:`api_url` and signs in with :func:`read_password`. Nothing here starts a
process or talks to Airflow.

JIP signs in to Airflow's API as its own user (``flow.airflow_username``, role admin)
with a password generated once and stored, mode 0600, in the simple auth manager's
password file in AIRFLOW_HOME: the one file Airflow itself reads it from.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path

from jip.config import Settings, reachable_host
from jip.errors import Unavailable

PASSWORDS_FILE_NAME = "simple_auth_manager_passwords.json.generated"
# New DAG files appear within this many seconds.
DAGS_REFRESH_INTERVAL_S = 10
# An unchanged DAG file is parsed again after this long. A changed one is parsed at the
# next pass anyway (in ``modified_time`` order the dag-processor queues files newer than
# their last parse first), and each parse is a process that competes with running tasks
# for a small site's two cores. JIP's DAG files change with a release, not while it
# runs: parse each once, and again only when it changes.
MIN_FILE_PROCESS_INTERVAL_S = 24 * 3600
FILE_PARSING_SORT_MODE = "modified_time"
# The scheduler sleeps this long only when a loop found nothing to do; it is the wait
# between a trigger (or a task's end) and the scheduler acting on it. Airflow's 1 s is
# most of a small run's latency. Measured at rest: the scheduler takes 6.9 % of one core
# at 0.2 s against 1.8 % at 1 s.
SCHEDULER_IDLE_SLEEP_S = 0.2
# A task's supervisor waits up to this long (Airflow: 5 s) between looks at its task
# process, and it often looked just before the process was gone, keeping the ended
# task's executor slot that long (jip.flow.worker.preload now has it wait on the process
# itself). It is also how often a running task tells the api-server it lives: one small
# request per running task and second.
TASK_HEARTBEAT_S = 1


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
    return f"http://{reachable_host(settings.flow.airflow_host)}:{settings.flow.airflow_port}"


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
    Airflow with ``AIRFLOW__SECTION__KEY`` variables that JIP does not set, and
    override the timings chosen for a small site (:func:`small_site_tuning`).
    """
    home = settings.resolved_airflow_home.expanduser().resolve()
    flow = settings.flow
    # Tasks at once, each a process: the site machine also runs store and meta.
    parallel = str(flow.max_parallel_series)
    env = small_site_tuning() | dict(base or {})
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
            # Default is <tmp>/airflow, shared by every Airflow on the machine.
            "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_STORAGE_PATH": str(home / "dag-bundles"),
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            "AIRFLOW__SCHEDULER__CATCHUP_BY_DEFAULT": "False",
        }
    )
    return env


def small_site_tuning() -> dict[str, str]:
    """Airflow's timings for one machine running a handful of tasks at once.

    Airflow's defaults suit a cluster scheduling thousands of tasks; on a site machine
    they put seconds between a trigger and the first task and between one task and the
    next (``bench/bench_flow.py`` shows where). An admin's own ``AIRFLOW__*`` variables
    win over these.
    """
    return {
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": str(SCHEDULER_IDLE_SLEEP_S),
        # JIP's workflows are triggered (API, rules), never on a timetable: without this
        # every scheduler loop looks for DAGs due to run, five times a second at rest.
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": str(TASK_HEARTBEAT_S),
        # The LocalExecutor's workers are forked from the preloaded scheduler
        # (jip.flow.worker.preload), so they and the task processes they fork start with
        # Airflow and JIP imported. "spawn" or "forkserver" (Python 3.14's default) would
        # import both again in every worker. (Airflow 3 no longer reads
        # [core] execute_tasks_new_python_interpreter: task processes are always forked.)
        "AIRFLOW__CORE__MP_START_METHOD": "fork",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": str(DAGS_REFRESH_INTERVAL_S),
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": str(MIN_FILE_PROCESS_INTERVAL_S),
        "AIRFLOW__DAG_PROCESSOR__FILE_PARSING_SORT_MODE": FILE_PARSING_SORT_MODE,
    }
