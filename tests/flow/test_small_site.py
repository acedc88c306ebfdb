"""The embedded Airflow's small-site setup: its timings, preloaded task modules, fused tasks.

How much these save is ``bench/bench_flow.py``'s to show; these tests only pin that the
setup is what Airflow's processes get, that an admin can still override it, and that a
fused series task parses into the shape the flow API reads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

from jip.config import FlowSettings, Settings
from jip.flow.airflow_home import airflow_environment, repository_dags_folder, small_site_tuning
from jip.flow.worker import preload


def test_airflow_gets_the_small_site_timings(tmp_path: Path) -> None:
    env = airflow_environment(Settings(data_dir=tmp_path, flow=FlowSettings(airflow_port=8000)))

    for key, value in small_site_tuning().items():
        assert env[key] == value
    assert float(env["AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME"]) < 1
    assert int(env["AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL"]) < 5


# Asks Airflow, with the environment `jip up` gives it, what each option now is; an
# option Airflow does not know is reported as such (a variable for it would be ignored).
_EFFECTIVE = """
import json, os, sys
from airflow.configuration import conf
known = conf.configuration_description
answer = {}
for name in json.loads(sys.argv[1]):
    section, key = name.removeprefix("AIRFLOW__").lower().split("__", 1)
    described = key in known.get(section, {}).get("options", {})
    answer[name] = conf.get(section, key) if described else "unknown to Airflow"
print(json.dumps(answer))
"""


def test_airflow_reads_every_small_site_setting_as_chosen(tmp_path: Path) -> None:
    env = airflow_environment(Settings(data_dir=tmp_path, flow=FlowSettings(airflow_port=8000)))
    (tmp_path / "airflow").mkdir(exist_ok=True)
    chosen = small_site_tuning() | {
        name: env[name] for name in ("AIRFLOW__CORE__EXECUTOR", "AIRFLOW__CORE__PARALLELISM")
    }

    answer = subprocess.run(
        [sys.executable, "-c", _EFFECTIVE, json.dumps(sorted(chosen))],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert answer.returncode == 0, answer.stderr
    effective = json.loads(answer.stdout.strip().splitlines()[-1])
    assert effective == chosen
    assert effective["AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE"] == "False"
    assert effective["AIRFLOW__CORE__MP_START_METHOD"] == "fork"
    assert int(effective["AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL"]) >= 3600


def test_an_admins_airflow_variable_wins_over_the_small_site_timings(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, flow=FlowSettings(airflow_port=8000))

    env = airflow_environment(settings, {"AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "2"})

    assert env["AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME"] == "2"


def test_preload_runs_airflows_command_line_with_the_task_modules_loaded() -> None:
    probe = (
        "import sys; from jip.flow.worker import preload; preload.preload(); "
        "assert 'jip.flow.worker.tasks' in sys.modules and 'airflow.sdk' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", probe], check=True, timeout=120)

    answer = subprocess.run(
        [sys.executable, "-m", "jip.flow.worker.preload", "version"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.strip().split(".")[0] == "3"


@pytest.mark.parametrize(("dag_file", "dag_id"), [("deidentify.py", "deidentify"),
                                                  ("convert_nifti.py", "convert-nifti")])  # fmt: skip
def test_one_operator_workflows_run_each_series_as_one_task(dag_file: str, dag_id: str) -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(repository_dags_folder() / dag_file))

    assert not bag.import_errors
    dag = bag.dags[dag_id]
    assert sorted(dag.task_dict) == ["cleanup", "list_series", f"series.{dag_id}"]
    fused = dag.task_dict[f"series.{dag_id}"]
    assert fused.upstream_task_ids == {"list_series"}


def test_preloaded_supervisors_wait_on_their_task_process() -> None:
    from airflow.sdk.execution_time.supervisor import WatchedSubprocess

    assert preload.wait_for_exit_in_supervisors()
    assert preload.wait_for_exit_in_supervisors()  # once only, however often called
    assert getattr(WatchedSubprocess._service_subprocess, "jip_waits_for_exit", False)
    assert not getattr(
        WatchedSubprocess._service_subprocess.__wrapped__, "jip_waits_for_exit", False
    )


def test_a_supervisor_whose_task_closed_its_sockets_waits_for_the_exit_itself() -> None:
    waits: list[float] = []

    def airflows_own(self: object, max_wait_time: float) -> int | None:
        waits.append(max_wait_time)
        return int(psutil_child.wait(timeout=0))

    psutil_child = psutil.Popen([sys.executable, "-c", "pass"])
    supervisor = SimpleNamespace(_open_sockets={}, _exit_code=None, _process=psutil_child)

    exit_code = preload._waiting_for_exit(airflows_own)(supervisor, 60.0)

    # The wait ended with the process (not after 60 s), so Airflow's own select waits no more.
    assert exit_code == 0
    assert waits == [0.0]


def test_a_supervisor_with_sockets_open_keeps_its_own_wait() -> None:
    waits: list[float] = []
    supervisor = SimpleNamespace(_open_sockets={"stdout": object()}, _exit_code=None,
                                 _process=SimpleNamespace(pid=os.getpid()))  # fmt: skip

    preload._waiting_for_exit(lambda _self, wait: waits.append(wait))(supervisor, 0.5)

    assert waits == [0.5]


def test_waiting_for_a_running_process_ends_at_the_timeout() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert preload.wait_for_exit(child.pid, 0.05) is False
    finally:
        child.kill()
        child.wait()
