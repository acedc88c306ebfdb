"""Runs an operator's ``main.py`` as a child process of the task, as another user.

Operators are untrusted code (DESIGN.md, "Trust boundaries"): they may see their input,
their output and nothing else of the site. So the child runs as an unprivileged user of
its own (``flow.operator_user``, default ``nobody``), never as JIP's: it cannot read the
token-signing key, the catalog, the parent's environment (``/proc/<pid>/environ``) or
any other file of the 0700 data directory. It reaches its folders through its working
directory, which is set while the child is still privileged: the contract variables
name the input and output folders relative to it, so no folder above it needs to be
open to the operator's user (the folders from it down to them are made searchable). The input is handed to that user, the output folder too;
``HOME`` and ``TMPDIR`` are a private folder removed afterwards.

Dropping to another user needs root. A JIP that does not run as root refuses to run
operators this way unless ``flow.operator_isolation`` is ``"none"`` (operators then run
as JIP's own user, with a warning) or another runner is chosen (a container, a pod).

How the child is started, what else of the environment it sees and how it is stopped
when the task ends live in :mod:`jip.flow.worker.process`, shared with the container
runner.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import shutil
import stat
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from jip.config import FlowSettings, Settings
from jip.errors import Invalid, NotFound, Unavailable
from jip.flow.worker.process import contract_env, inherited_env, run_process
from jip.flow.worker.runner import LogSink, OperatorJob, OperatorOutcome, operators_dir

log = logging.getLogger(__name__)

DEFAULT_OPERATOR_USER = "nobody"


@dataclass(frozen=True)
class OperatorAccount:
    """The unprivileged user operators run as."""

    name: str
    uid: int
    gid: int


def operator_account(flow: FlowSettings, *, euid: int | None = None) -> OperatorAccount | None:
    """Who operators run as; None (JIP's own user) only with ``operator_isolation = none``.

    Raises Unavailable where isolation is asked for but JIP cannot drop to another user
    (it does not run as root), Invalid for an unknown or privileged user.
    """
    if flow.operator_isolation == "none":
        log.warning(
            "operators run as JIP's own user and can read its signing key, catalog and "
            "environment (flow.operator_isolation = none)"
        )
        return None
    if (os.geteuid() if euid is None else euid) != 0:
        raise Unavailable(
            "the subprocess runner runs operators as an unprivileged user of their own, "
            "which needs JIP to run as root; run it as root (operators then run as "
            "flow.operator_user, default nobody), set flow.runner = container, or set "
            "flow.operator_isolation = none to run operators as JIP's own user (they can "
            "then read its keys, catalog and environment)"
        )
    name = flow.operator_user or DEFAULT_OPERATOR_USER
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise Invalid(f"flow.operator_user {name!r} is no user on this machine") from None
    if entry.pw_uid == 0 or entry.pw_gid == 0:
        raise Invalid(f"flow.operator_user {name!r} is privileged (uid or gid 0): name another")
    return OperatorAccount(name=name, uid=entry.pw_uid, gid=entry.pw_gid)


def check_operator_isolation(settings: Settings, python: str = sys.executable) -> None:
    """Refuse to start a site whose subprocess runner could not isolate operators, or
    whose operators' user could not even start the interpreter (found at start, not at
    the first run)."""
    if settings.flow.runner != "subprocess":
        return
    account = operator_account(settings.flow)
    if account is not None and not can_execute(account, Path(python)):
        raise Unavailable(
            f"operator user {account.name!r} cannot run {python} (a folder on its way is "
            "closed to that user): install Python where that user can read it, set "
            "flow.runner = container, or set flow.operator_isolation = none to run "
            "operators as JIP's own user"
        )


def can_execute(account: OperatorAccount, program: Path) -> bool:
    """Whether ``account`` may run ``program``: every folder on the way to it (and to
    what its links point at) searchable, the file itself readable and executable."""
    for path in (program.absolute(), program.resolve()):
        for folder in reversed(path.parents):
            if not _allows(account, folder, stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH):
                return False
    target = program.resolve()
    return _allows(account, target, stat.S_IRUSR, stat.S_IRGRP, stat.S_IROTH) and _allows(
        account, target, stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH
    )


def _allows(account: OperatorAccount, path: Path, user: int, group: int, other: int) -> bool:
    info = path.stat()
    if info.st_uid == account.uid:
        return bool(info.st_mode & user)
    groups = {account.gid, *(g.gr_gid for g in grp.getgrall() if account.name in g.gr_mem)}
    if info.st_gid in groups:
        return bool(info.st_mode & group)
    return bool(info.st_mode & other)


class SubprocessRunner:
    """Runs ``operators/<name>/main.py``; as ``account`` when one is given."""

    name = "subprocess"

    def __init__(
        self,
        *,
        operators_dir: Path,
        timeout_s: float = 6 * 3600.0,
        python: str = sys.executable,
        account: OperatorAccount | None = None,
    ) -> None:
        self.operators_dir = operators_dir
        self.timeout_s = timeout_s
        self.python = python
        self.account = account

    @classmethod
    def from_settings(cls, settings: Settings) -> SubprocessRunner:
        return cls(
            operators_dir=operators_dir(settings),
            timeout_s=settings.flow.operator_timeout_s,
            account=operator_account(settings.flow),
        )

    def command(self, job: OperatorJob) -> list[str]:
        return [self.python, str(self._main(job))]

    def run(self, job: OperatorJob, log: LogSink) -> OperatorOutcome:
        main = self._main(job)
        job.output_dir.mkdir(parents=True, exist_ok=True)
        if self.account is None:
            env = inherited_env() | contract_env(
                str(job.input_dir.resolve()), str(job.output_dir.resolve()), job.params
            )
            return run_process(
                self.command(job), env=env, log=log, timeout_s=self.timeout_s, cwd=main.parent
            )
        return self._run_as(self.account, job, main, log)

    def _run_as(
        self, account: OperatorAccount, job: OperatorJob, main: Path, log: LogSink
    ) -> OperatorOutcome:
        input_dir, output_dir = job.input_dir.resolve(), job.output_dir.resolve()
        base = Path(os.path.commonpath([input_dir, output_dir]))
        for folder in (input_dir, output_dir):
            _searchable(base, folder.parent)
            _hand_over(folder, account)
        home = Path(tempfile.mkdtemp(prefix="jip-operator-"))
        os.chown(home, account.uid, account.gid)
        env = inherited_env() | {"HOME": str(home), "TMPDIR": str(home)}
        env |= contract_env(
            os.path.relpath(input_dir, base) if input_dir != base else ".",
            os.path.relpath(output_dir, base) if output_dir != base else ".",
            job.params,
        )
        try:
            return run_process(
                [self.python, str(main)],
                env=env,
                log=log,
                timeout_s=self.timeout_s,
                cwd=base,
                user=account.uid,
                group=account.gid,
            )
        except PermissionError as exc:
            raise Unavailable(
                f"operator user {account.name!r} cannot run {self.python} {main} ({exc}): "
                "make the interpreter and flow.operators_dir readable to it, or use "
                "flow.runner = container"
            ) from exc
        finally:
            shutil.rmtree(home, ignore_errors=True)

    def _main(self, job: OperatorJob) -> Path:
        main = self.operators_dir / job.operator / "main.py"
        if not main.is_file():
            raise NotFound(f"operator {job.operator!r} not found: no {main}")
        return main


def _searchable(base: Path, folder: Path) -> None:
    """Let others pass through ``base`` down to ``folder`` (search, not list): the
    operator starts in ``base``; the folders above it stay closed."""
    while True:
        if folder == base or base in folder.parents:
            os.chmod(folder, stat.S_IMODE(folder.stat().st_mode) | stat.S_IXOTH)
        if folder == base or base not in folder.parents:
            return
        folder = folder.parent


def _hand_over(folder: Path, account: OperatorAccount) -> None:
    """Give ``folder`` and everything in it to the operator's user."""
    os.chown(folder, account.uid, account.gid)
    for root, dirs, files in os.walk(folder):
        for name in (*dirs, *files):
            os.chown(os.path.join(root, name), account.uid, account.gid, follow_symlinks=False)
