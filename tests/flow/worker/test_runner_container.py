"""The container runner: its command line, and a real podman run where podman works."""

from __future__ import annotations

import io
import itertools
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from jip_sdk.contract import PARAMS_VAR

from jip.flow.worker.runner import OperatorJob
from jip.flow.worker.runner_container import OPERATOR_UID, ContainerRunner, container_name


def job(tmp_path: Path) -> OperatorJob:
    return OperatorJob(
        operator="organ-seg",
        version="0.1.0",
        input_dir=tmp_path / "in",
        output_dir=tmp_path / "out",
        params={"salt": "do-not-show-me-anywhere"},
        labels={"series": "1.2.3", "task": "organ-seg"},
        run_id="jip__20260101T000000_abcdef",
    )


def test_command_mounts_input_read_only_and_output_read_write(tmp_path: Path) -> None:
    argv = ContainerRunner(engine="podman", user=(1000, 1000), rootless=True).command(job(tmp_path))
    assert argv[:3] == ["podman", "run", "--rm"]
    assert f"{(tmp_path / 'in').resolve()}:/jip/input:ro,Z" in argv
    assert f"{(tmp_path / 'out').resolve()}:/jip/output:rw,Z" in argv
    assert argv[-1] == "jip/organ-seg:0.1.0"
    pairs = list(itertools.pairwise(argv))
    assert ("--env", "JIP_INPUT_DIR=/jip/input") in pairs
    assert ("--env", "JIP_OUTPUT_DIR=/jip/output") in pairs
    assert ("--env", PARAMS_VAR) in pairs  # value from the environment, not the argv
    assert ("--userns", "keep-id") in pairs and ("--user", "1000:1000") in pairs


def test_command_isolates_the_container(tmp_path: Path) -> None:
    argv = ContainerRunner(engine="docker", registry="registry.local/", user=(0, 0)).command(
        job(tmp_path)
    )
    pairs = list(itertools.pairwise(argv))
    assert ("--network", "none") in pairs
    assert ("--cap-drop", "ALL") in pairs
    assert ("--security-opt", "no-new-privileges") in pairs
    assert "--read-only" in argv and ("--tmpfs", "/tmp") in pairs
    assert "--userns" not in argv  # docker, and root
    assert ("--user", f"{OPERATOR_UID}:{OPERATOR_UID}") in pairs  # root never runs it
    assert argv[-1] == "registry.local/jip/organ-seg:0.1.0"
    assert ("--label", "jip.series=1.2.3") in pairs
    assert ("--name", container_name(job(tmp_path))) in pairs


def test_root_podman_runs_the_operator_as_the_sdk_images_user(tmp_path: Path) -> None:
    for user in (None, (0, 0), (1000, 0)):
        runner = ContainerRunner(engine="/usr/bin/podman", user=user, rootless=False)
        pairs = list(itertools.pairwise(runner.command(job(tmp_path))))
        assert ("--user", f"{OPERATOR_UID}:{OPERATOR_UID}") in pairs, user
        assert ("--userns", "keep-id") not in pairs  # root podman refuses keep-id


def test_secret_parameters_never_reach_the_command_line(tmp_path: Path) -> None:
    runner = ContainerRunner(engine="podman", cpus=2, memory="4g")
    argv = runner.command(job(tmp_path))
    assert not any("do-not-show-me" in part for part in argv)
    assert "do-not-show-me-anywhere" in runner.environment(job(tmp_path))[PARAMS_VAR]
    pairs = list(itertools.pairwise(argv))
    assert ("--cpus", "2") in pairs and ("--memory", "4g") in pairs


def _minimal_image(name: str, env: dict[str, str]) -> bool:
    """Import a tiny image (dash and libc) whose entry point follows the contract."""
    script = (
        'echo "hello from the container"\n'
        'echo "$JIP_PARAMS" > "$JIP_OUTPUT_DIR/params.json"\n'
        'for f in "$JIP_INPUT_DIR"/*; do echo "input: $f"; done\n'
        'echo \'{"jip_progress": 1.0, "message": "done"}\'\n'
    )
    files = {
        "bin/sh": Path("/bin/dash"),
        "lib/x86_64-linux-gnu/libc.so.6": Path("/lib/x86_64-linux-gnu/libc.so.6"),
        "lib64/ld-linux-x86-64.so.2": Path("/lib64/ld-linux-x86-64.so.2"),
    }
    if not all(p.exists() for p in files.values()):
        return False
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for arcname, source in files.items():
            tar.add(source.resolve(), arcname=arcname)
        data = script.encode()
        info = tarfile.TarInfo("op/main.sh")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        folder = tarfile.TarInfo("tmp")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
    result = subprocess.run(
        ["podman", "import", "--change", 'ENTRYPOINT ["/bin/sh", "/op/main.sh"]', "-", name],
        input=buffer.getvalue(),
        capture_output=True,
        env=env,
        timeout=120,
        check=False,
    )
    return result.returncode == 0


@pytest.mark.slow
def test_podman_runs_an_operator_image_under_the_contract(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed")
    # Sandboxes often forbid raising RLIMIT_NOFILE, which podman does by default.
    conf = tmp_path / "containers.conf"
    conf.write_text("[containers]\ndefault_ulimits = []\n")
    monkeypatch.setenv("CONTAINERS_CONF", str(conf))
    if not _minimal_image("localhost/jip/echo:0.1.0", dict(os.environ)):
        pytest.skip("podman cannot import images here")
    (tmp_path / "in" / "1.2.3").mkdir(parents=True)
    the_job = OperatorJob(
        operator="echo",
        version="0.1.0",
        input_dir=tmp_path / "in",
        output_dir=tmp_path / "out",
        params={"label": "x"},
    )
    lines: list[str] = []
    outcome = ContainerRunner(engine="podman", registry="localhost/").run(the_job, lines.append)
    if outcome.exit_code == 125 or any("OCI runtime" in line for line in lines):
        pytest.skip(f"podman cannot start containers here: {lines[-1:]}")
    assert outcome.ok, lines
    assert "hello from the container" in lines
    assert "input: /jip/input/1.2.3" in lines
    assert outcome.progress is not None and outcome.progress.fraction == 1.0
    assert (tmp_path / "out" / "params.json").read_text().strip() == '{"label":"x"}'
    # Written as the operator's user, handed back to the task's user afterwards.
    for path in (tmp_path / "out", tmp_path / "out" / "params.json", tmp_path / "in" / "1.2.3"):
        assert (path.stat().st_uid, path.stat().st_gid) == (os.getuid(), os.getgid()), path
