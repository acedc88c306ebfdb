"""The embedded Airflow's small-site setup: its timings, preloaded task modules, fused tasks.

How much these save is ``bench/bench_flow.py``'s to show; these tests only pin that the
setup is what Airflow's processes get, that an admin can still override it, and that a
fused series task parses into the shape the flow API reads.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from jip.config import FlowSettings, Settings
from jip.flow.airflow_home import airflow_environment, repository_dags_folder, small_site_tuning


def test_airflow_gets_the_small_site_timings(tmp_path: Path) -> None:
    env = airflow_environment(Settings(data_dir=tmp_path, flow=FlowSettings(airflow_port=8000)))

    for key, value in small_site_tuning().items():
        assert env[key] == value
    assert float(env["AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME"]) < 1
    assert int(env["AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL"]) < 5


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
