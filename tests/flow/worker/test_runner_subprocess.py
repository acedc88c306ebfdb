"""The subprocess runner, for real: a tiny operator and the real organ-seg."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest
from jip_sdk.phantom import build_abdomen_phantom, write_ct_series

from jip.backends import runner_for
from jip.config import FlowSettings, Settings
from jip.errors import Invalid, NotFound
from jip.flow.worker.runner import (
    OperatorFailed,
    OperatorJob,
    OperatorOutcome,
    check_outcome,
    describe_exit,
    repository_operators_dir,
)
from jip.flow.worker.runner_subprocess import SubprocessRunner

ECHO_OPERATOR = """
import json, os, sys, time
from pathlib import Path
inp, out = Path(os.environ["JIP_INPUT_DIR"]), Path(os.environ["JIP_OUTPUT_DIR"])
params = json.loads(os.environ.get("JIP_PARAMS") or "{}")
print("echo: starting", flush=True)
print(json.dumps({"jip_progress": 0.5, "series": "1.2.3", "message": "half"}), flush=True)
seen = {k: os.environ.get(k) for k in ("JIP_API_TOKEN", "AIRFLOW__CORE__FERNET_KEY", "PATH")}
(out / "1.2.3").mkdir(parents=True, exist_ok=True)
(out / "1.2.3" / "result.json").write_text(json.dumps({"params": params, "seen": seen,
    "inputs": sorted(p.name for p in inp.iterdir())}))
time.sleep(float(params.get("sleep_s", 0)))
print("echo: to stderr", file=sys.stderr, flush=True)
sys.exit(int(params.get("exit", 0)))
"""


@pytest.fixture
def operators(tmp_path: Path) -> Path:
    folder = tmp_path / "operators" / "echo"
    folder.mkdir(parents=True)
    (folder / "main.py").write_text(textwrap.dedent(ECHO_OPERATOR))
    return tmp_path / "operators"


def job(tmp_path: Path, **params: object) -> OperatorJob:
    (tmp_path / "in" / "1.2.3").mkdir(parents=True, exist_ok=True)
    return OperatorJob(
        operator="echo",
        input_dir=tmp_path / "in",
        output_dir=tmp_path / "out",
        params=params,
        labels={"series": "1.2.3"},
    )


def test_operator_gets_contract_and_output_lines_reach_the_log(
    operators: Path, tmp_path: Path
) -> None:
    lines: list[str] = []
    outcome = SubprocessRunner(operators_dir=operators).run(job(tmp_path, label="x"), lines.append)
    assert outcome.ok and outcome.exit_code == 0
    assert "echo: starting" in lines and "echo: to stderr" in lines
    assert outcome.progress is not None and outcome.progress.fraction == 0.5
    result = json.loads((tmp_path / "out" / "1.2.3" / "result.json").read_text())
    assert result["params"] == {"label": "x"}
    assert result["inputs"] == ["1.2.3"]


def test_task_secrets_stay_out_of_the_operator_environment(
    operators: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JIP_API_TOKEN", "secret-token")
    monkeypatch.setenv("AIRFLOW__CORE__FERNET_KEY", "secret-key")
    SubprocessRunner(operators_dir=operators).run(job(tmp_path), lambda _: None)
    seen = json.loads((tmp_path / "out" / "1.2.3" / "result.json").read_text())["seen"]
    assert seen["JIP_API_TOKEN"] is None and seen["AIRFLOW__CORE__FERNET_KEY"] is None
    assert seen["PATH"] == os.environ["PATH"]


def test_non_zero_exit_is_reported_with_its_meaning(operators: Path, tmp_path: Path) -> None:
    outcome = SubprocessRunner(operators_dir=operators).run(job(tmp_path, exit=3), lambda _: None)
    assert not outcome.ok and outcome.exit_code == 3
    with pytest.raises(OperatorFailed, match="status 3: the input cannot be processed") as err:
        check_outcome(outcome, "echo")
    assert err.value.exit_code == 3


def test_an_operator_past_its_time_limit_is_stopped(operators: Path, tmp_path: Path) -> None:
    runner = SubprocessRunner(operators_dir=operators, timeout_s=1.0)
    outcome = runner.run(job(tmp_path, sleep_s=60), lambda _: None)
    assert outcome.timed_out and not outcome.ok
    assert outcome.duration_s < 30
    assert "did not finish within the time limit of 1 s" in describe_exit(outcome, "echo", 1.0)


def test_unknown_operator_is_not_found(operators: Path, tmp_path: Path) -> None:
    bad = OperatorJob(operator="nope", input_dir=tmp_path, output_dir=tmp_path / "o")
    with pytest.raises(NotFound, match="operator 'nope' not found"):
        SubprocessRunner(operators_dir=operators).run(bad, lambda _: None)


def test_operator_names_and_versions_are_checked(tmp_path: Path) -> None:
    with pytest.raises(Invalid, match="operator name"):
        OperatorJob(operator="../etc", input_dir=tmp_path, output_dir=tmp_path)
    with pytest.raises(Invalid, match="image tag"):
        OperatorJob(operator="ok", version="a b", input_dir=tmp_path, output_dir=tmp_path)


def test_the_runner_comes_from_settings(tmp_path: Path) -> None:
    for name, kind in (("subprocess", "subprocess"), ("container", "container")):
        settings = Settings(data_dir=tmp_path, flow=FlowSettings(runner=name))  # type: ignore[arg-type]
        assert runner_for(settings).name == kind


def test_describe_exit_names_a_signal() -> None:
    outcome = OperatorOutcome(exit_code=-9, duration_s=1.0)
    assert "killed by signal 9" in describe_exit(outcome, "x")


def test_real_organ_seg_runs_as_a_subprocess(tmp_path: Path) -> None:
    ct = write_ct_series(build_abdomen_phantom(), tmp_path / "in")
    lines: list[str] = []
    runner = SubprocessRunner(operators_dir=repository_operators_dir())
    the_job = OperatorJob(
        operator="organ-seg",
        version="0.1.0",
        input_dir=tmp_path / "in",
        output_dir=tmp_path / "out",
        params={"structures": ["liver"]},
    )
    outcome = runner.run(the_job, lines.append)
    assert outcome.ok, "\n".join(lines)
    assert (tmp_path / "out" / ct.series_instance_uid / "seg.dcm").is_file()
    assert outcome.progress is not None and outcome.progress.fraction == 1.0
