"""Start an Airflow component with JIP's task modules already imported.

``python -m jip.flow.worker.preload scheduler`` is ``airflow scheduler`` with
:mod:`jip.flow.worker.tasks` (and through it the site's client, steps and runners)
imported first. The LocalExecutor's workers are forked from the scheduler and each task
process is forked from a worker, without exec; the DAG processor forks one process per
DAG file it parses. A module imported here is therefore imported once per component
rather than once per task and per parse: about a second of CPU on every task start on a
two-core site machine (measured by ``bench/bench_flow.py``). Like any code of JIP's, a
change to these modules takes effect when `jip up` restarts Airflow; DAG files
themselves are still read afresh by every parse and task.

The same start mends one wait of Airflow's task supervisor (:func:`wait_for_exit`).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import select
import sys
from collections.abc import Callable
from typing import Any

# What a task imports only when it runs a step (runners, result storage, the review
# operator): imported here too, so that no task pays for them and every task of one
# `jip up` runs the same code.
TASK_MODULES = (
    "jip.flow.worker.tasks",  # airflow.sdk, the client, steps
    "jip.flow.worker.operator_step",  # every shipped DAG's step helper
    "jip.flow.worker.operators",
    "jip.flow.worker.runner_subprocess",
    "jip.flow.worker.runner_container",
)


def preload() -> None:
    """Import what every DAG file and task imports (a failure here is theirs too: raise)."""
    for name in TASK_MODULES:
        importlib.import_module(name)
    wait_for_exit_in_supervisors()


def wait_for_exit_in_supervisors() -> bool:
    """Make Airflow's task supervisor notice its task's end when it happens.

    The supervisor (``WatchedSubprocess``) waits in ``select`` on the task's sockets. A
    task closes them as it exits, slightly before the kernel reports the process gone;
    the supervisor then finds it still alive and selects again on no socket at all,
    which sleeps a whole ``[workers] min_heartbeat_interval`` (a whole second at the
    least: Airflow reads it as an integer). Meanwhile the task's executor slot stays
    taken and its end is unknown to the scheduler. Waiting on the process itself
    instead ends that wait the moment it exits. Returns whether the supervisor could be
    mended (an Airflow without these internals keeps its own behaviour).
    """
    try:
        from airflow.sdk.execution_time.supervisor import WatchedSubprocess
    except ImportError:
        return False
    original = getattr(WatchedSubprocess, "_service_subprocess", None)
    if original is None or getattr(original, "jip_waits_for_exit", False):
        return original is not None
    WatchedSubprocess._service_subprocess = _waiting_for_exit(original)  # type: ignore[method-assign]
    return True


def _waiting_for_exit(original: Callable[..., int | None]) -> Callable[..., int | None]:
    @functools.wraps(original)
    def service(self: Any, max_wait_time: float, *args: Any, **kwargs: Any) -> int | None:
        sockets_left = getattr(self, "_open_sockets", None)
        process = getattr(self, "_process", None)
        if (
            sockets_left is not None
            and not sockets_left
            and getattr(self, "_exit_code", 0) is None
            and process is not None
            and wait_for_exit(process.pid, max_wait_time)
        ):
            max_wait_time = 0.0
        return original(self, max_wait_time, *args, **kwargs)

    service.jip_waits_for_exit = True  # type: ignore[attr-defined]
    return service


def wait_for_exit(pid: int, timeout_s: float) -> bool:
    """Block until process ``pid`` ends or ``timeout_s`` passes; whether it ended.

    A Linux pidfd becomes readable when the process ends: an event, not a poll. Where
    there is none (another kernel or platform), False: the caller waits its own way.
    """
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        return False
    try:
        readable, _, _ = select.select([fd], [], [], max(0.0, timeout_s))
        return bool(readable)
    except OSError:
        return False
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)


def main(argv: list[str]) -> None:
    """Run ``airflow <argv>`` in this process after :func:`preload`."""
    preload()
    from airflow.__main__ import main as airflow_main

    sys.argv = ["airflow", *argv]
    airflow_main()


if __name__ == "__main__":
    main(sys.argv[1:])
