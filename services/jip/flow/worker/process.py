"""Operator child processes: the contract environment and one supervised subprocess.

Every runner that starts a local process (the operator's ``main.py`` itself, or
``podman run``/``docker run``) builds its environment and supervises the child the same
way: the child gets the contract variables and a small allow-list of the parent's
environment (PATH, locale, HOME, the virtualenv), never the task's own secrets
(``JIP_API_TOKEN``, S3 keys, Airflow's variables). Its stdout and stderr, merged, go
line by line to the task log as they come. The child leads a process group of its own
and, on Linux, is sent SIGTERM when the task process dies (``PR_SET_PDEATHSIG``), so a
cancelled or killed task never leaves an operator running. The Kubernetes runner uses
only :func:`contract_env`.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from jip_sdk.contract import INPUT_DIR_VAR, OUTPUT_DIR_VAR, PARAMS_VAR

from jip.flow.worker.runner import LogSink, OperatorOutcome, relay_lines

# Passed through to operators; everything else in the task's environment stays there.
INHERITED_ENV = (
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "PYTHONPATH",
    "VIRTUAL_ENV",
    "SYSTEMROOT",
)
_PR_SET_PDEATHSIG = 1
_KILL_GRACE_S = 10.0


def contract_env(input_dir: str, output_dir: str, params: Mapping[str, object]) -> dict[str, str]:
    """The operator contract's three variables."""
    return {
        INPUT_DIR_VAR: input_dir,
        OUTPUT_DIR_VAR: output_dir,
        PARAMS_VAR: json.dumps(dict(params), separators=(",", ":")),
    }


def inherited_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    source = os.environ if environ is None else environ
    env = {name: source[name] for name in INHERITED_ENV if name in source}
    env["PYTHONUNBUFFERED"] = "1"  # lines reach the log when written, not at exit
    return env


def run_process(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    log: LogSink,
    timeout_s: float,
    cwd: Path | None = None,
    user: int | None = None,
    group: int | None = None,
) -> OperatorOutcome:
    """Run ``argv``, relay its merged output to ``log``, stop it after ``timeout_s``.

    ``user``/``group``: drop to these ids (and no supplementary groups) before exec;
    ``cwd`` is entered before, while still privileged."""
    started = time.monotonic()
    process = subprocess.Popen(
        list(argv),
        env=dict(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
        errors="replace",
        bufsize=1,
        start_new_session=True,
        user=user,
        group=group,
        extra_groups=[] if user is not None else None,
        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
    )
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        _stop(process)

    watchdog = threading.Timer(timeout_s, expire)
    watchdog.daemon = True
    watchdog.start()
    try:
        assert process.stdout is not None
        progress = relay_lines(process.stdout, log)
        code = process.wait()
    finally:
        watchdog.cancel()
        if process.poll() is None:  # the task itself is being stopped
            _stop(process)
    return OperatorOutcome(
        exit_code=code,
        duration_s=time.monotonic() - started,
        progress=progress,
        timed_out=expired.is_set(),
    )


def _stop(process: subprocess.Popen[str]) -> None:
    """SIGTERM the operator's process group, SIGKILL it after a grace period."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=_KILL_GRACE_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: ask the kernel for SIGTERM when the
    # parent (the Airflow task process) dies, whatever killed it.
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
