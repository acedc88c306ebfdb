"""The operator runner port: start one operator on one staged input, report how it ended.

An operator is the same program everywhere (DESIGN.md, "Operator contract"); only the
runner differs: a local subprocess, a container (podman, docker) or a Kubernetes pod.
The runner is chosen by ``settings.flow.runner`` in :func:`jip.backends.runner_for`, never by the
operator or the DAG. Every runner sets the three contract variables, sends each line the
operator writes to stdout to a log sink, and recognises progress lines
(``{"jip_progress": ...}``) in that stream.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from jip_sdk.entry import ExitCode
from jip_sdk.progress import Progress, parse_progress

from jip.config import Settings
from jip.errors import Invalid, JipError, NotFound

# Operator names are folder names under operators/ and image names: jip/<name>:<version>.
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
# The unprivileged user every operator image creates (jip/operator-sdk): container and
# Kubernetes runners start operators as it.
OPERATOR_UID = 10001
_VERSION = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")

LogSink = Callable[[str], None]

_EXIT_MEANINGS = {
    ExitCode.FAILED: "the operator failed (read its traceback in the log)",
    ExitCode.BAD_PARAMS: "bad parameters or environment (fix the run request)",
    ExitCode.BAD_INPUT: "the input cannot be processed by this operator",
}


class OperatorFailed(JipError):
    """An operator ended with a non-zero exit status or did not end in time."""

    def __init__(self, message: str, *, exit_code: int | None) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True, kw_only=True)
class OperatorJob:
    """One operator run: which operator, where its input and output lie, with what."""

    operator: str
    version: str = "latest"
    input_dir: Path
    output_dir: Path
    params: Mapping[str, Any] = field(default_factory=dict)
    # Names the container or pod and lets an admin find it: run_id, series, task.
    labels: Mapping[str, str] = field(default_factory=dict)
    # The series the input holds, for runners that stage the input themselves (a pod
    # without the shared work volume fetches them from the store).
    series: tuple[str, ...] = ()
    run_id: str = ""
    # The run's own token, for runners whose stage containers reach the API (pods
    # without the work volume); never given to the operator itself.
    api_token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        check_operator_name(self.operator)
        if not _VERSION.match(self.version):
            raise Invalid(f"operator version {self.version!r} is not a valid image tag")


@dataclass(frozen=True, kw_only=True)
class OperatorOutcome:
    """How an operator run ended."""

    exit_code: int
    duration_s: float
    progress: Progress | None = None
    timed_out: bool = False
    # True when the runner already pushed the output to the store (pods that stage
    # through the store's API); nothing is left in the job's output_dir then.
    delivered: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


@runtime_checkable
class OperatorRunner(Protocol):
    """Runs operators; one instance may run several jobs at once (one per thread)."""

    name: str

    def run(self, job: OperatorJob, log: LogSink) -> OperatorOutcome:
        """Run ``job`` to its end, sending every output line to ``log``."""
        ...


def check_operator_name(name: str) -> str:
    if not _NAME.match(name):
        raise Invalid(
            f"operator name {name!r} must be lower-case letters, digits and '-' "
            "(it names a folder under operators/ and an image)"
        )
    return name


def repository_operators_dir() -> Path:
    """``operators/`` of the checkout this package runs from."""
    return Path(__file__).resolve().parents[4] / "operators"  # services/jip/flow/worker/


def operators_dir(settings: Settings) -> Path:
    return (settings.flow.operators_dir or repository_operators_dir()).expanduser().resolve()


def operator_main(settings: Settings, name: str) -> Path:
    """``operators/<name>/main.py``; NotFound names the folder searched."""
    main = operators_dir(settings) / check_operator_name(name) / "main.py"
    if not main.is_file():
        raise NotFound(f"operator {name!r} not found: no {main}")
    return main


def image_name(registry: str, operator: str, version: str) -> str:
    """``<registry>jip/<operator>:<version>``, as `docker build -t jip/<operator>` names it."""
    return f"{registry}jip/{check_operator_name(operator)}:{version}"


def describe_exit(outcome: OperatorOutcome, operator: str, timeout_s: float | None = None) -> str:
    """A one-line reason a researcher can act on."""
    if outcome.timed_out:
        limit = f" of {timeout_s:.0f} s" if timeout_s else ""
        return f"operator {operator} did not finish within the time limit{limit}"
    code = outcome.exit_code
    meaning: str | None = _EXIT_MEANINGS.get(code)  # type: ignore[call-overload]
    if code < 0:
        meaning = f"killed by signal {-code}"
    return f"operator {operator} exited with status {code}" + (f": {meaning}" if meaning else "")


def check_outcome(outcome: OperatorOutcome, operator: str, timeout_s: float | None = None) -> None:
    """Raise :class:`OperatorFailed` unless the run succeeded."""
    if not outcome.ok:
        raise OperatorFailed(
            describe_exit(outcome, operator, timeout_s),
            exit_code=None if outcome.timed_out else outcome.exit_code,
        )


def relay_lines(lines: Iterable[str], log: LogSink) -> Progress | None:
    """Send each line to ``log``; return the last progress report seen."""
    last: Progress | None = None
    for raw in lines:
        line = raw.rstrip("\r\n")
        log(line)
        progress = parse_progress(line)
        if progress is not None:
            last = progress
    return last
