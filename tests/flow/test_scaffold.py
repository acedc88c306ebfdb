"""`jip operator new`'s Dockerfile: the short shape on the operator SDK base, and (with
podman) an image that builds from it by the command it prints and runs through the
container runner on the phantom CT."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest
from jip_sdk.phantom import build_abdomen_phantom, write_ct_series
from tests.deploy.images_built import ULIMITS, ensure_built, limit_containers, podman

from jip.flow.scaffold import image_build_command, scaffold_operator, sdk_version
from jip.flow.worker.runner import OperatorJob
from jip.flow.worker.runner_container import ContainerRunner

NAME = "scaffold-probe"  # an image tag of this test's own, removed afterwards


def test_dockerfile_is_the_short_shape_on_the_sdk_base(tmp_path: Path) -> None:
    scaffold_operator(tmp_path, "lesion-count")
    text = (tmp_path / "lesion-count" / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert lines == [
        f"ARG SDK=localhost/jip/operator-sdk:{sdk_version()}",
        "FROM ${SDK}",
        "COPY operators/lesion-count/main.py operators/lesion-count/params.schema.json ./",
        "USER 10001:10001",
        'ENTRYPOINT ["/opt/venv/bin/python", "main.py"]',
    ]
    assert "--build-arg SDK=" in text  # a site with a registry points SDK elsewhere
    command = image_build_command("lesion-count")
    assert command.startswith("podman build --format docker -f operators/lesion-count/Dockerfile")
    assert command in text and command in (tmp_path / "lesion-count" / "README.md").read_text()


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_scaffolded_operator_builds_by_its_command_and_runs_in_a_container(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ensure_built("operator-sdk")
    context = tmp_path / "repo"  # the Dockerfile's paths are relative to a repository root
    scaffold_operator(context / "operators", NAME)
    tag = f"localhost/jip/{NAME}:0.1.0"
    program, *arguments = shlex.split(image_build_command(NAME))  # the command it prints
    assert program == "podman" and arguments[-3:] == ["-t", f"jip/{NAME}:0.1.0", "."]
    build = [podman(), *arguments[:1], *ULIMITS, *arguments[1:]]
    built = subprocess.run(
        build, cwd=context, capture_output=True, text=True, timeout=600, check=False
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    try:
        limit_containers(tmp_path, monkeypatch)
        ct = write_ct_series(build_abdomen_phantom(shape=(4, 64, 64)), tmp_path / "in")
        job = OperatorJob(
            operator=NAME,
            version="0.1.0",
            input_dir=ct.series.path.parent,
            output_dir=tmp_path / "out",
            params={"label": "in-a-container"},
        )
        lines: list[str] = []
        outcome = ContainerRunner(engine=podman(), registry="localhost/").run(job, lines.append)
        assert outcome.ok, "\n".join(lines[-40:])
        summary = json.loads(
            (tmp_path / "out" / ct.series_instance_uid / "summary.json").read_text()
        )
        assert summary["instances"] == 4 and summary["label"] == "in-a-container"
    finally:
        subprocess.run([podman(), "rmi", "--force", tag], capture_output=True, check=False)
