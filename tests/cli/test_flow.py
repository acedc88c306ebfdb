"""`jip flow …` against a served site (fake workflow engine), `jip operator new|test`."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from jip_sdk.phantom import build_abdomen_phantom
from tests.fakes.workflow_engine import FakeEngine, series_workflow
from tests.flow.support import ingest_phantom
from tests.support.network import free_port
from tests.support.servers import serve_in_thread

from jip.app import build_app
from jip.cli.flow import parse_params
from jip.cli.main import _register, cli
from jip.config import AuthSettings, Settings
from jip.flow.engine import RunState, TaskState
from jip.runtime import build_runtime

_register()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    data_dir = tmp_path_factory.mktemp("site")
    settings = Settings(data_dir=data_dir, http_port=free_port(), auth=AuthSettings(enabled=False))
    runtime = build_runtime(settings)
    fake = FakeEngine(series_workflow("organ-seg-radiomics", "organ-seg", "radiomics"))
    app = build_app(runtime)
    app.state.runtime.workflow_engine = fake
    ct = ingest_phantom(runtime, build_abdomen_phantom(shape=(4, 64, 64)), data_dir.parent / "ct")
    with serve_in_thread(app, port=settings.http_port) as url:
        yield {"url": url, "fake": fake, "ct": ct, "runtime": runtime, "data_dir": data_dir}
    runtime.close()


@pytest.fixture
def invoke(served: dict[str, Any], tmp_path: Path) -> Any:
    env = {"JIP_API_URL": served["url"], "XDG_CONFIG_HOME": str(tmp_path / "config")}

    def run(*args: str, env_extra: dict[str, str] | None = None) -> Any:
        return CliRunner().invoke(
            cli, ["--data-dir", str(served["data_dir"]), *args], env={**env, **(env_extra or {})}
        )

    return run


def test_params_parse_nested_and_json_values() -> None:
    assert parse_params(("organ-seg.median_radius=2", "organ-seg.structures=[\"liver\"]",
                         "radiomics.bin_width=12.5", "note=plain text")) == {
        "organ-seg": {"median_radius": 2, "structures": ["liver"]},
        "radiomics": {"bin_width": 12.5},
        "note": "plain text",
    }  # fmt: skip


def _finish_soon(fake: FakeEngine, uid: str) -> None:
    def finish() -> None:
        deadline = time.monotonic() + 20
        while not fake.runs and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(2.5)
        (run_id,) = list(fake.runs)[-1:]
        fake.add_task(run_id, "list_series", TaskState.SUCCESS)
        fake.add_task(run_id, "series.organ-seg", TaskState.SUCCESS, 0, uid)
        fake.set_run(run_id, RunState.SUCCESS)

    threading.Thread(target=finish, daemon=True).start()


def test_flow_run_waits_and_prints_json(served: dict[str, Any], invoke: Any) -> None:
    uid = served["ct"].series_instance_uid
    _finish_soon(served["fake"], uid)
    result = invoke("flow", "run", "organ-seg-radiomics", "--series", uid,
                    "--param", "organ-seg.median_radius=2", "--wait", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["run"]["state"] == "success"
    assert answer["run"]["per_series"][0]["tasks"] == {"organ-seg": "success"}
    assert answer["results"] == []
    conf = served["fake"].runs[answer["run"]["run_id"]].conf
    assert conf["organ-seg"] == {"median_radius": 2}


def test_flow_run_refuses_bad_params_with_the_servers_message(
    served: dict[str, Any], invoke: Any
) -> None:
    uid = served["ct"].series_instance_uid
    result = invoke("flow", "run", "organ-seg-radiomics", "--series", uid,
                    "--param", "organ-seg.median_radius=9")  # fmt: skip
    assert result.exit_code == 1
    assert "organ-seg/median_radius" in result.output
    both = invoke("flow", "run", "organ-seg-radiomics", "--series", uid, "--cohort", "c")
    assert both.exit_code == 2 and "either --cohort or" in both.output


def test_flow_runs_logs_and_cancel(served: dict[str, Any], invoke: Any) -> None:
    uid = served["ct"].series_instance_uid
    started = invoke("flow", "run", "organ-seg-radiomics", "--series", uid, "--json")
    run_id = json.loads(started.stdout)["run_id"]
    served["fake"].add_task(run_id, "series.organ-seg", TaskState.RUNNING, 0, uid, log="segmenting")
    listed = invoke("flow", "runs")
    assert run_id in listed.output
    logs = invoke("flow", "logs", run_id, "--task", "organ-seg", "--series", uid)
    assert logs.exit_code == 0 and "segmenting" in logs.output
    cancelled = invoke("flow", "cancel", run_id)
    assert cancelled.exit_code == 0 and "cancelled" in cancelled.output
    status = invoke("flow", "status", run_id)
    assert "cancelled" in status.output


def test_flow_rules_commands(invoke: Any) -> None:
    added = invoke("flow", "rules", "add", "ct-seg", "--workflow", "organ-seg-radiomics",
                   "--query", '{"term": {"Modality": "CT"}}')  # fmt: skip
    assert added.exit_code == 0, added.output
    assert "ct-seg" in invoke("flow", "rules", "list").output
    assert "disabled" in invoke("flow", "rules", "disable", "ct-seg").output
    assert "enabled" in invoke("flow", "rules", "enable", "ct-seg").output
    assert invoke("flow", "rules", "remove", "ct-seg").exit_code == 0
    assert json.loads(invoke("flow", "rules", "list", "--json").stdout) == []


@pytest.mark.slow
def test_operator_new_scaffolds_a_passing_operator_that_runs_on_local_data(
    served: dict[str, Any], invoke: Any, tmp_path: Path
) -> None:
    root = tmp_path / "operators"
    made = invoke("operator", "new", "demo-op", "--dir", str(root))
    assert made.exit_code == 0, made.output
    folder = root / "demo-op"
    for name in ("main.py", "Dockerfile", "params.schema.json", "README.md",
                 "tests/test_demo_op.py"):  # fmt: skip
        assert (folder / name).is_file(), name
    again = invoke("operator", "new", "demo-op", "--dir", str(root))
    assert again.exit_code == 1 and "already exists" in again.output
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(folder)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert tests.returncode == 0, tests.stdout + tests.stderr
    uid = served["ct"].series_instance_uid
    output = tmp_path / "out"
    ran = invoke("operator", "test", "demo-op", "--series", uid, "--param", "label=checked",
                 "--output", str(output), env_extra={"JIP_FLOW__OPERATORS_DIR": str(root)})  # fmt: skip
    assert ran.exit_code == 0, ran.output
    assert "exit 0" in ran.output and "summary.json" in ran.output
    summary = json.loads((output / uid / "summary.json").read_text())
    assert summary == {"series_instance_uid": uid, "instances": 4, "modality": "CT",
                       "label": "checked"}  # fmt: skip
    failed = invoke("operator", "test", "demo-op", "--series", uid, "--param", "nope=1",
                    env_extra={"JIP_FLOW__OPERATORS_DIR": str(root)})  # fmt: skip
    assert failed.exit_code == 2 and "bad parameters" in failed.output
