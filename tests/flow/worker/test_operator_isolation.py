"""Operators in the subprocess runner cannot read the site: keys, catalog, JIP's environment.

The operator below tries what untrusted code would: read the token-signing key and the
catalog from the data directory, the parent's ``/proc/<pid>/environ`` and its own
environment. It runs as the runner's operator user (``nobody``: these tests run as root,
here and in CI) with an interpreter that user can execute.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.base.support import site_settings

from jip.backends import runner_for
from jip.config import FlowSettings, Settings
from jip.errors import Unavailable
from jip.flow.worker.runner import OperatorJob
from jip.flow.worker.runner_subprocess import (
    SubprocessRunner,
    can_execute,
    check_operator_isolation,
    operator_account,
)
from jip.runtime import build_runtime

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="dropping to another user needs root")

PROBE = """
import json, os, sys
from pathlib import Path
params = json.loads(os.environ["JIP_PARAMS"])
data_dir = Path(params["data_dir"])
def attempt(path):
    try:
        with open(path, "rb") as handle:
            return "read %d bytes" % len(handle.read())
    except OSError as exc:
        return type(exc).__name__
tried = {str(p): attempt(p) for p in [*map(Path, params["keys"]), data_dir / "catalog.db",
         Path("/proc/%d/environ" % os.getppid())]}
try:
    listing = sorted(os.listdir(data_dir / "keys"))
except OSError as exc:
    listing = type(exc).__name__
out = Path(os.environ["JIP_OUTPUT_DIR"]) / "1.2.3"
out.mkdir(parents=True, exist_ok=True)
inputs = sorted(p.name for p in (Path(os.environ["JIP_INPUT_DIR"]) / "1.2.3").iterdir())
(out / "probe.json").write_text(json.dumps({"tried": tried, "keys": listing, "env": dict(os.environ),
    "uid": os.getuid(), "inputs": inputs}))
"""


def _python_for(user: str) -> str:
    """An interpreter ``user`` can run (the venv's may live under root's 0700 home)."""
    for candidate in (sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"):
        if candidate and Path(candidate).exists():
            try:
                ran = subprocess.run(
                    [candidate, "-c", "pass"], user=user, capture_output=True, check=False
                )
            except PermissionError:
                continue
            if ran.returncode == 0:
                return candidate
    pytest.fail(f"no Python interpreter that user {user!r} may run")


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A folder every user may enter, as the operators folder of a real site is."""
    folder = Path(tempfile.mkdtemp(prefix="jip-isolation-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_an_operator_cannot_read_the_signing_key_catalog_or_parent_environment(
    open_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The site's data directory where any user could reach it: only its own modes and
    # the operator's user keep the operator out.
    settings = site_settings(open_dir / "site")
    runtime = build_runtime(settings)
    runtime.identity.issue_run_token(run_id="r1", projects=[], ttl_s=60, started_by="t")
    runtime.close()
    key_files = list((settings.data_dir / "keys").iterdir())
    assert key_files and (settings.data_dir / "catalog.db").is_file()
    monkeypatch.setenv("JIP_API_TOKEN", "parent-secret-token")
    operators = open_dir / "operators"
    (operators / "probe").mkdir(parents=True)
    (operators / "probe" / "main.py").write_text(textwrap.dedent(PROBE))
    (operators / "probe").chmod(0o755)
    (operators / "probe" / "main.py").chmod(0o644)
    (tmp_path / "in" / "1.2.3").mkdir(parents=True)
    (tmp_path / "in" / "1.2.3" / "a.dcm").write_bytes(b"input")
    (tmp_path / "in" / "1.2.3" / "a.dcm").chmod(0o600)

    account = operator_account(FlowSettings())
    assert account is not None and account.name == "nobody" and account.uid != 0
    runner = SubprocessRunner(
        operators_dir=operators, python=_python_for(account.name), account=account
    )
    lines: list[str] = []
    job = OperatorJob(
        operator="probe",
        input_dir=tmp_path / "in",
        output_dir=tmp_path / "out",
        params={"data_dir": str(settings.data_dir), "keys": [str(p) for p in key_files]},
    )
    outcome = runner.run(job, lines.append)
    assert outcome.ok, "\n".join(lines)

    probe = json.loads((tmp_path / "out" / "1.2.3" / "probe.json").read_text())
    assert probe["uid"] == account.uid
    assert probe["inputs"] == ["a.dcm"]  # its own input it reads
    assert set(probe["tried"].values()) == {"PermissionError"}, probe["tried"]
    assert probe["keys"] == "PermissionError"
    assert "parent-secret-token" not in json.dumps(probe["env"])
    assert not {k for k in probe["env"] if k.startswith(("JIP_API", "AIRFLOW", "JIP_S3"))}


def test_without_root_the_subprocess_runner_refuses_unless_told_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    settings = Settings(data_dir=tmp_path)
    with pytest.raises(Unavailable, match="operator_isolation = none"):
        runner_for(settings)
    with pytest.raises(Unavailable, match="needs JIP to run as root"):
        check_operator_isolation(settings)  # `jip up` refuses to start
    container = Settings(data_dir=tmp_path, flow=FlowSettings(runner="container"))
    check_operator_isolation(container)
    assert runner_for(container).name == "container"
    opted_out = Settings(data_dir=tmp_path, flow=FlowSettings(operator_isolation="none"))
    with caplog.at_level(logging.WARNING):
        runner = runner_for(opted_out)
    assert isinstance(runner, SubprocessRunner) and runner.account is None
    assert "can read its signing key" in caplog.text


def test_the_operator_user_must_exist_and_be_unprivileged() -> None:
    from jip.errors import Invalid

    with pytest.raises(Invalid, match="no user"):
        operator_account(FlowSettings(operator_user="no-such-user-here"))
    with pytest.raises(Invalid, match="privileged"):
        operator_account(FlowSettings(operator_user="root"))


def test_a_site_whose_operator_user_cannot_start_python_refuses_at_start(tmp_path: Path) -> None:
    # pytest's own temp folders are 0700: start from one others may pass through.
    shared = Path(tempfile.mkdtemp(prefix="jip-python-"))
    shared.chmod(0o755)
    try:
        _check_the_interpreter_path(shared / "closed", tmp_path)
    finally:
        shutil.rmtree(shared)


def _check_the_interpreter_path(closed: Path, tmp_path: Path) -> None:
    (closed / "bin").mkdir(parents=True)
    python = closed / "bin" / "python"
    python.write_text("#!/bin/sh\n")
    python.chmod(0o755)
    closed.chmod(0o700)  # root's own folder: nobody cannot pass through it
    settings = Settings(data_dir=tmp_path / "data")
    with pytest.raises(Unavailable, match="cannot run"):
        check_operator_isolation(settings, python=str(python))
    closed.chmod(0o755)
    check_operator_isolation(settings, python=str(python))  # open: the site starts
    account = operator_account(settings.flow)
    assert account is not None and can_execute(account, python)
