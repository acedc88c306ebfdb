"""The images `make images` builds, run for real with podman: an operator image through
the container runner on the phantom CT, confined there (not root, no capabilities, no
network, nothing writable but its output and /tmp), the JIP image serving /healthz, and
every image non-root without a compiler. Skipped only where podman is missing (.ci/run
installs it).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from jip_sdk.phantom import build_abdomen_phantom, write_ct_series
from jip_sdk.testing import dciodvfy_errors
from tests.deploy.images_built import (
    ULIMITS,
    deploy_module,
    ensure_built,
    limit_containers,
    podman,
    run_in,
)
from tests.support.network import free_port

from jip.flow.worker.runner import OperatorJob
from jip.flow.worker.runner_container import OPERATOR_UID as CONTAINER_UID
from jip.flow.worker.runner_container import ContainerRunner

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]  # a cold build takes minutes
COMPILERS = ("gcc", "cc", "c++", "g++", "clang", "x86_64-linux-gnu-gcc")
OPERATOR_UID = 10001


@pytest.fixture(scope="module")
def built() -> dict[str, str]:
    """Every image (all names), built or found in podman's layer cache."""
    names = [image.name for image in deploy_module("images").all_images()]
    return ensure_built(*names)


@pytest.fixture
def container_limits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The container runner's `podman run` gets the limits runc can set in a sandbox."""
    limit_containers(tmp_path, monkeypatch)


def test_organ_seg_image_writes_a_valid_seg_through_the_container_runner(
    built: dict[str, str], tmp_path: Path, container_limits: None
) -> None:
    ct = write_ct_series(build_abdomen_phantom(), tmp_path / "input")
    output = tmp_path / "output"
    job = OperatorJob(
        operator="organ-seg",
        version=deploy_module("images").version(),
        input_dir=ct.series.path.parent,
        output_dir=output,
        params={},
        run_id="image-test",
    )
    # As the runner runs it in Airflow: as the task's own user (keep-id when rootless).
    runner = ContainerRunner(engine=podman(), registry="localhost/")
    lines: list[str] = []
    outcome = runner.run(job, lines.append)
    assert outcome.ok, "\n".join(lines[-40:])
    seg = output / ct.series_instance_uid / "seg.dcm"
    assert seg.is_file(), sorted(p.name for p in output.rglob("*"))
    assert dciodvfy_errors(seg) == []
    assert outcome.progress is not None and outcome.progress.fraction == 1.0
    assert seg.stat().st_uid == os.getuid()  # handed back to the task's user


# What the probe tries to write outside its output and /tmp: the read-only input, the
# image's files, the root file system.
FORBIDDEN = ("/jip/input/1.2.3/new", "/jip/input/1.2.3/1.dcm", "/opt/operator/main.py",
             "/opt/venv/pyvenv.cfg", "/etc/passwd", "/probe")  # fmt: skip
PROBE = f"""
out="$JIP_OUTPUT_DIR"
id -u > "$out/uid"
grep -E '^(CapEff|NoNewPrivs):' /proc/self/status > "$out/status"
ls /sys/class/net > "$out/net"
for path in {" ".join(FORBIDDEN)}; do
    if (echo probe >> "$path") 2>/dev/null; then echo "$path" >> "$out/written"; fi
done
echo probe > /tmp/probe && echo probe > "$out/1.2.3.txt"
"""


class ProbeRunner(ContainerRunner):
    """The container runner's own command and hand-over, with a shell probe as the entry
    point instead of the operator's main.py."""

    def command(self, job: OperatorJob) -> list[str]:
        *argv, image = super().command(job)
        return [*argv, "--entrypoint", "/bin/sh", image, "-c", PROBE]


def test_operator_container_is_not_root_and_writes_only_its_output(
    built: dict[str, str], tmp_path: Path, container_limits: None
) -> None:
    series = tmp_path / "input" / "1.2.3"
    series.mkdir(parents=True)
    (series / "1.dcm").write_bytes(b"untouched")
    output = tmp_path / "output"
    job = OperatorJob(
        operator="organ-seg",
        version=deploy_module("images").version(),
        input_dir=tmp_path / "input",
        output_dir=output,
        run_id="image-probe",
    )
    lines: list[str] = []
    outcome = ProbeRunner(engine=podman(), registry="localhost/").run(job, lines.append)
    assert outcome.ok, "\n".join(lines[-40:])
    uid = int((output / "uid").read_text())
    assert uid != 0 and uid == (CONTAINER_UID if os.geteuid() == 0 else os.getuid())
    status = dict(line.split(":") for line in (output / "status").read_text().splitlines())
    assert int(status["CapEff"], 16) == 0 and status["NoNewPrivs"].strip() == "1"
    assert (output / "net").read_text().split() == ["lo"]
    assert not (output / "written").exists(), (output / "written").read_text()
    assert (output / "1.2.3.txt").read_text() == "probe\n"  # output and /tmp are writable
    assert sorted(p.name for p in series.iterdir()) == ["1.dcm"]
    assert (series / "1.dcm").read_bytes() == b"untouched"
    for path in (output, output / "uid", series):  # both folders handed back
        assert (path.stat().st_uid, path.stat().st_gid) == (os.getuid(), os.getgid()), path


@pytest.fixture
def api_container(built: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """`jip up --role api` in the JIP image, as the chart runs it: read-only root
    filesystem, a writable /tmp and data volume; yields its origin."""
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    os.chown(data, OPERATOR_UID, OPERATOR_UID)
    port = free_port()
    name = f"jip-image-test-{port}"
    argv = [
        *(podman(), "run", "--detach", "--name", name, *ULIMITS, "--no-healthcheck"),
        *("--network", "host", "--read-only", "--tmpfs", "/tmp"),
        *("--volume", f"{data}:/var/lib/jip", "--env", f"JIP_HTTP_PORT={port}"),
        *("--env", "JIP_HTTP_HOST=127.0.0.1", built["jip"], "up", "--role", "api"),
    ]
    subprocess.run(argv, check=True, capture_output=True, timeout=120)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        logs = subprocess.run([podman(), "logs", name], capture_output=True, text=True, check=False)
        (tmp_path / "container.log").write_text(logs.stdout + logs.stderr)
        subprocess.run([podman(), "rm", "--force", name], capture_output=True, check=False)


def test_jip_image_serves_healthz_in_the_api_role(api_container: str, tmp_path: Path) -> None:
    deadline = time.monotonic() + 120
    answer: httpx.Response | None = None
    while time.monotonic() < deadline:
        try:
            answer = httpx.get(f"{api_container}/healthz", timeout=3)
            break
        except httpx.TransportError:
            time.sleep(1)
    assert answer is not None, "jip up --role api never answered /healthz"
    assert answer.status_code == 200, answer.text


def test_every_image_runs_as_non_root_without_a_compiler(built: dict[str, str]) -> None:
    for name, ref in built.items():
        user = subprocess.run(
            [podman(), "image", "inspect", "--format", "{{.User}}", ref],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        assert user and user.split(":")[0] not in {"0", "root"}, f"{name} runs as {user!r}"
        found = run_in(ref, "-c", f"command -v {' '.join(COMPILERS)}; id -u", entrypoint="/bin/sh")
        *compilers, uid = found.stdout.split()
        assert compilers == [], f"{name} has a compiler: {compilers}"
        assert uid != "0", f"{name} runs as root"


def test_jip_image_declares_its_healthcheck(built: dict[str, str]) -> None:
    check = subprocess.run(
        [podman(), "image", "inspect", "--format", "{{json .HealthCheck}}", built["jip"]],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "/healthz" in json.loads(check)["Test"][-1]


def test_lock_records_every_image_digest(built: dict[str, str]) -> None:
    images = deploy_module("images")
    lock = json.loads(images.LOCK.read_text())
    for name in built:
        entry = lock["images"][f"jip/{name}:{images.version()}"]
        assert entry["digest"].startswith("sha256:") and entry["id"].startswith("sha256:")
