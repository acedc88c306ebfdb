"""Runs an operator image with podman or docker: ``<registry>jip/<operator>:<version>``.

The container sees the staged input read-only at ``/jip/input`` and writes to
``/jip/output``; it has no network (operators get their data from the runner, and a
hospital network is no place for an image to call home), no capabilities, a read-only
root file system with a private ``/tmp``, and runs as the task's own user so that what
it writes belongs to the task (rootless podman maps that user with ``keep-id``).
``JIP_PARAMS`` is handed over through the engine's environment (``-e JIP_PARAMS``
without a value), so secret parameters never show on a command line.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from jip_sdk.contract import INPUT_DIR_VAR, OUTPUT_DIR_VAR, PARAMS_VAR

from jip.flow.worker.process import contract_env, inherited_env, run_process
from jip.flow.worker.runner import LogSink, OperatorJob, OperatorOutcome, image_name

CONTAINER_INPUT = "/jip/input"
CONTAINER_OUTPUT = "/jip/output"
_LABEL_VALUE = re.compile(r"[^A-Za-z0-9_.-]")
# Where podman and docker find their state and configuration.
_ENGINE_ENV = (
    "XDG_RUNTIME_DIR",
    "DOCKER_HOST",
    "DOCKER_CONFIG",
    "CONTAINER_HOST",
    "CONTAINERS_CONF",
    "CONTAINERS_STORAGE_CONF",
    "CONTAINERS_REGISTRIES_CONF",
    "USER",
)


class ContainerRunner:
    """Builds and runs the ``podman run`` (or ``docker run``) command of a job."""

    name = "container"

    def __init__(
        self,
        *,
        engine: str = "podman",
        registry: str = "",
        cpus: float | None = None,
        memory: str | None = None,
        timeout_s: float = 6 * 3600.0,
        user: tuple[int, int] | None = None,
    ) -> None:
        self.engine = engine
        self.registry = registry
        self.cpus = cpus
        self.memory = memory
        self.timeout_s = timeout_s
        self.user = user if user is not None else (os.getuid(), os.getgid())

    def image(self, job: OperatorJob) -> str:
        return image_name(self.registry, job.operator, job.version)

    def command(self, job: OperatorJob) -> list[str]:
        """The full command line; parameters stay out of it (see module docs)."""
        uid, gid = self.user
        argv = [
            self.engine,
            "run",
            "--rm",
            "--name",
            container_name(job),
            "--network",
            "none",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--read-only",
            "--tmpfs",
            "/tmp",
            "--user",
            f"{uid}:{gid}",
        ]
        if Path(self.engine).name == "podman" and uid != 0:
            argv += ["--userns", "keep-id"]  # rootless: the task's user inside is itself
        argv += [
            "--volume",
            f"{job.input_dir.resolve()}:{CONTAINER_INPUT}:ro,Z",
            "--volume",
            f"{job.output_dir.resolve()}:{CONTAINER_OUTPUT}:rw,Z",
            "--env",
            f"{INPUT_DIR_VAR}={CONTAINER_INPUT}",
            "--env",
            f"{OUTPUT_DIR_VAR}={CONTAINER_OUTPUT}",
            "--env",
            PARAMS_VAR,  # the value comes from the engine's environment
            "--env",
            "HOME=/tmp",
            "--env",
            "PYTHONUNBUFFERED=1",
        ]
        if self.cpus is not None:
            argv += ["--cpus", f"{self.cpus:g}"]
        if self.memory is not None:
            argv += ["--memory", self.memory]
        argv += ["--label", f"jip.operator={job.operator}"]
        for key, value in sorted(job.labels.items()):
            argv += ["--label", f"jip.{key}={_LABEL_VALUE.sub('_', value)}"]
        argv.append(self.image(job))
        return argv

    def environment(self, job: OperatorJob) -> dict[str, str]:
        """The engine process's environment: the parent's basics plus ``JIP_PARAMS``."""
        params = contract_env(CONTAINER_INPUT, CONTAINER_OUTPUT, job.params)[PARAMS_VAR]
        env = inherited_env()
        for name in _ENGINE_ENV:
            if name in os.environ:
                env[name] = os.environ[name]
        env[PARAMS_VAR] = params
        return env

    def run(self, job: OperatorJob, log: LogSink) -> OperatorOutcome:
        job.output_dir.mkdir(parents=True, exist_ok=True)
        return run_process(
            self.command(job), env=self.environment(job), log=log, timeout_s=self.timeout_s
        )


def container_name(job: OperatorJob) -> str:
    """A name unique per run, series and operator, that an admin can find with `ps`."""
    key = "|".join([job.run_id, *sorted(f"{k}={v}" for k, v in job.labels.items())])
    digest = hashlib.sha256(f"{key}|{job.input_dir}".encode()).hexdigest()[:12]
    return f"jip-{job.operator}-{digest}"
