"""Runs an operator image with podman or docker: ``<registry>jip/<operator>:<version>``.

The container sees the staged input read-only at ``/jip/input`` and writes to
``/jip/output``; it has no network (operators get their data from the runner, and a
hospital network is no place for an image to call home), no capabilities, no way to gain
privileges, a read-only root file system with a private ``/tmp``, and never runs as
root. Rootless podman runs it as the task's own user (``--userns keep-id``), so what it
writes belongs to the task. Root podman or docker would run it as uid 0 unless told
otherwise, so it runs as the operator user of the SDK image (uid 10001): the input and
output folders are handed to that user for the run and back to the task's user
afterwards, whatever the outcome.
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
from jip.flow.worker.runner import (
    OPERATOR_UID,
    LogSink,
    OperatorJob,
    OperatorOutcome,
    image_name,
)

CONTAINER_INPUT = "/jip/input"
CONTAINER_OUTPUT = "/jip/output"
# The operator user of jip/operator-sdk (deploy/operator-sdk.Dockerfile), which every
# operator image starts from: who runs the operator wherever the task's user is root.
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
        rootless: bool | None = None,
    ) -> None:
        self.engine = engine
        self.registry = registry
        self.cpus = cpus
        self.memory = memory
        self.timeout_s = timeout_s
        # Not root: podman maps this process's user in (keep-id); nothing changes hands.
        self.rootless = os.geteuid() != 0 if rootless is None else rootless
        self.user = container_user(user if user is not None else (os.getuid(), os.getgid()))

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
        if Path(self.engine).name == "podman" and self.rootless:
            argv += ["--userns", "keep-id"]  # the task's user inside is itself
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
        if not self._hands_over():
            return self._run(job, log)
        owner = os.getuid(), os.getgid()
        for folder in (job.input_dir, job.output_dir):
            chown_tree(folder, self.user)
        try:
            return self._run(job, log)
        finally:
            for folder in (job.input_dir, job.output_dir):
                chown_tree(folder, owner)

    def _run(self, job: OperatorJob, log: LogSink) -> OperatorOutcome:
        return run_process(
            self.command(job), env=self.environment(job), log=log, timeout_s=self.timeout_s
        )

    def _hands_over(self) -> bool:
        """Whether the folders must change hands: the container's user is not ours and
        no user namespace maps it to us (root engine, or docker)."""
        if self.rootless:
            return False
        return os.geteuid() == 0 and self.user != (os.getuid(), os.getgid())


def container_user(user: tuple[int, int]) -> tuple[int, int]:
    """``user``, unless it is root (uid or gid 0): then the SDK image's operator user."""
    uid, gid = user
    return (uid, gid) if uid != 0 and gid != 0 else (OPERATOR_UID, OPERATOR_UID)


def chown_tree(folder: Path, user: tuple[int, int]) -> None:
    """Give ``folder`` and everything below it (links themselves, not their targets) to
    ``user``; a missing folder is left alone."""
    if not folder.exists():
        return
    uid, gid = user
    os.chown(folder, uid, gid)
    for root, dirs, files in os.walk(folder):
        for name in (*dirs, *files):
            os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)


def container_name(job: OperatorJob) -> str:
    """A name unique per run, series and operator, that an admin can find with `ps`."""
    key = "|".join([job.run_id, *sorted(f"{k}={v}" for k, v in job.labels.items())])
    digest = hashlib.sha256(f"{key}|{job.input_dir}".encode()).hexdigest()[:12]
    return f"jip-{job.operator}-{digest}"
