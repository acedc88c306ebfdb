"""`AirflowEngine` against a real embedded Airflow running `dags/jip_selftest.py`.

What every `WorkflowEngine` promises is tests/flow/test_engine_contract.py's, on Airflow
and on the fake alike; these tests cover what is Airflow's own (the self-test DAG's
mapping, labels and logs, signing in). The last tests cover the embedded Airflow's home
and supervisor without starting Airflow.
"""

from __future__ import annotations

import socket
import stat
import uuid
from pathlib import Path

import httpx
import pytest
from tests.flow.selftest import MAPPED, SELFTEST, mapped, series_uids, wait_for_run

from jip.config import FlowSettings, Settings
from jip.errors import Conflict, Invalid, Unavailable
from jip.flow.airflow_home import (
    airflow_environment,
    ensure_password,
    passwords_file,
    read_password,
    repository_dags_folder,
)
from jip.flow.embedded_airflow import EmbeddedAirflow
from jip.flow.engine import RunState, TaskState
from jip.flow.engine_airflow import AirflowEngine


@pytest.mark.slow
def test_workflows_list_selftest_with_its_params_schema(engine: AirflowEngine) -> None:
    workflows = {w.dag_id: w for w in engine.list_workflows()}

    selftest = workflows[SELFTEST]
    assert selftest.description and "self-test" in selftest.description
    assert not selftest.paused
    assert "jip" in selftest.tags
    schema = selftest.params_schema
    assert schema["type"] == "object"
    assert schema["properties"]["series"]["type"] == "array"
    assert schema["properties"]["series"]["items"] == {"type": "string"}
    assert schema["properties"]["series"]["default"] == []
    assert schema["properties"]["fail_series"]["default"] is None
    assert schema["properties"]["sleep_s"]["maximum"] == 3600
    assert "description" in schema["properties"]["series"]


@pytest.mark.slow
def test_run_fans_out_one_task_instance_per_series(engine: AirflowEngine) -> None:
    uids = series_uids(3)
    run_id = f"jip-test-{uuid.uuid4().hex[:12]}"

    started = engine.trigger(SELFTEST, {"series": uids}, run_id=run_id)
    finished = wait_for_run(engine, run_id)

    assert started.run_id == run_id
    assert started.state in (RunState.QUEUED, RunState.RUNNING)
    assert finished.state is RunState.SUCCESS
    assert finished.conf["series"] == uids
    assert finished.started_at and finished.ended_at and finished.started_at <= finished.ended_at
    tasks = engine.task_instances(SELFTEST, run_id)
    assert [(t.task_id, t.map_index) for t in tasks if t.task_id != MAPPED] == [("list_series", -1)]
    per_series = mapped(tasks)
    assert [t.map_index for t in per_series] == [0, 1, 2]
    assert sorted(t.label or "" for t in per_series) == sorted(uids)
    assert all(t.state is TaskState.SUCCESS and t.try_number == 1 for t in tasks)
    assert engine.list_runs(SELFTEST, limit=1)[0].run_id == run_id  # newest first
    assert run_id in [r.run_id for r in engine.list_runs(limit=10)]


@pytest.mark.slow
def test_task_log_holds_what_the_task_printed(engine: AirflowEngine) -> None:
    uids = series_uids(2)
    run = engine.trigger(SELFTEST, {"series": uids})
    wait_for_run(engine, run.run_id)

    by_index = {t.map_index: t for t in mapped(engine.task_instances(SELFTEST, run.run_id))}
    uid = by_index[1].label
    text = engine.task_log(SELFTEST, run.run_id, MAPPED, map_index=1)

    assert f"jip-selftest: processing series {uid}" in text
    assert f"jip-selftest: done series {uid}" in text
    assert text == engine.task_log(SELFTEST, run.run_id, MAPPED, map_index=1, try_number=1)


@pytest.mark.slow
def test_failing_series_fails_the_run_but_not_the_other_series(engine: AirflowEngine) -> None:
    uids = series_uids(3)
    run = engine.trigger(SELFTEST, {"series": uids, "fail_series": uids[1]})
    finished = wait_for_run(engine, run.run_id)

    assert finished.state is RunState.FAILED
    states = {t.label: t.state for t in mapped(engine.task_instances(SELFTEST, run.run_id))}
    assert states == {
        uids[0]: TaskState.SUCCESS,
        uids[1]: TaskState.FAILED,
        uids[2]: TaskState.SUCCESS,
    }
    failed_index = next(
        t.map_index
        for t in mapped(engine.task_instances(SELFTEST, run.run_id))
        if t.label == uids[1]
    )
    text = engine.task_log(SELFTEST, run.run_id, MAPPED, map_index=failed_index)
    assert f"failing series {uids[1]} as asked" in text
    assert "RuntimeError" in text


def test_only_success_failed_and_skipped_can_be_set(unused_port: int) -> None:
    client = AirflowEngine(f"http://127.0.0.1:{unused_port}", username="jip", password="x")
    try:
        with pytest.raises(Invalid, match="not running"):
            client.set_task_state(SELFTEST, "any-run", MAPPED, TaskState.RUNNING)
    finally:
        client.close()


@pytest.mark.slow
def test_token_signed_with_another_key_is_fetched_again(engine: AirflowEngine) -> None:
    client = AirflowEngine(engine.base_url, username=engine.username, password=engine.rest.password)
    client.rest._token = "signed.with.another-key"
    try:
        assert client.get_workflow(SELFTEST).dag_id == SELFTEST
        assert client.rest._token not in (None, "signed.with.another-key")
    finally:
        client.close()


@pytest.mark.slow
def test_wrong_password_is_unavailable_naming_the_setting(engine: AirflowEngine) -> None:
    client = AirflowEngine(engine.base_url, username=engine.username, password="wrong")
    try:
        with pytest.raises(Unavailable, match=r"flow\.airflow_password"):
            client.list_runs()
    finally:
        client.close()


def test_expired_token_is_fetched_again_once() -> None:
    # Airflow answers 401 only for an expired token, which a test cannot wait for.
    tokens = iter(["first", "second"])
    seen: list[str] = []

    def airflow(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/auth/token":
            return httpx.Response(201, json={"access_token": next(tokens)})
        seen.append(request.headers["Authorization"])
        if request.headers["Authorization"] == "Bearer first":
            return httpx.Response(401, json={"detail": "Token Expired"})
        return httpx.Response(200, json={"dag_runs": [], "total_entries": 0})

    client = AirflowEngine(
        "http://airflow", username="jip", password="x", transport=httpx.MockTransport(airflow)
    )

    assert client.list_runs() == []
    assert seen == ["Bearer first", "Bearer second"]


def test_a_busy_airflow_database_is_asked_again_for_idempotent_requests_only() -> None:
    # The embedded Airflow's SQLite answers "database is locked" as a 500 while busy.
    busy = {"GET": 1, "POST": 1}
    calls: list[str] = []

    def airflow(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/auth/token":
            return httpx.Response(201, json={"access_token": "t"})
        calls.append(request.method)
        if busy[request.method]:
            busy[request.method] -= 1
            return httpx.Response(500, json={"reason": "Database error", "message": "locked"})
        return httpx.Response(200, json={"dag_runs": [], "total_entries": 0})

    client = AirflowEngine(
        "http://airflow", username="jip", password="x", transport=httpx.MockTransport(airflow)
    )
    assert client.list_runs() == []  # a GET: asked again once the database is free
    assert calls == ["GET", "GET"]
    with pytest.raises(Unavailable, match="500"):  # a trigger is never sent twice
        client.rest.call("POST", "/api/v2/dags/x/dagRuns", what="a trigger", json={})
    assert calls == ["GET", "GET", "POST"]


def test_unreachable_airflow_is_unavailable(unused_port: int) -> None:
    client = AirflowEngine(f"http://127.0.0.1:{unused_port}", username="jip", password="x")
    try:
        with pytest.raises(Unavailable, match=r"is Airflow running\? `jip status`"):
            client.list_workflows()
        with pytest.raises(Unavailable, match="not reachable"):
            client.health()
        assert not client.healthy()
    finally:
        client.close()


# -- the embedded Airflow (jip/flow/airflow_home.py, jip/flow/embedded_airflow.py) -----


def test_airflow_is_not_started_on_a_taken_port(tmp_path: Path, unused_port: int) -> None:
    settings = Settings(data_dir=tmp_path, flow=FlowSettings(airflow_port=unused_port))
    with socket.create_server(("127.0.0.1", unused_port)):
        airflow = EmbeddedAirflow(settings)
        with pytest.raises(Conflict, match=f"port {unused_port}.*`jip status`"):
            airflow.start()
    assert airflow.pids == {}
    assert not (tmp_path / "airflow").exists()


def test_api_password_is_generated_once_and_private(tmp_path: Path) -> None:
    first = ensure_password(tmp_path, "jip")
    again = ensure_password(tmp_path, "jip")

    assert first == again == read_password(tmp_path, "jip")
    assert len(first) >= 24
    assert stat.S_IMODE(passwords_file(tmp_path).stat().st_mode) == 0o600
    assert ensure_password(tmp_path, "jip", "configured") == read_password(tmp_path, "jip")
    assert read_password(tmp_path, "someone-else") is None


def test_airflow_environment_points_at_the_site(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, flow=FlowSettings(airflow_port=8000))

    env = airflow_environment(settings, {"PATH": "/usr/bin", "AIRFLOW__CORE__EXECUTOR": "x"})

    home = tmp_path / "airflow"
    assert env["PATH"] == "/usr/bin"
    assert env["AIRFLOW_HOME"] == str(home)
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(repository_dags_folder())
    assert (repository_dags_folder() / "jip_selftest.py").is_file()
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{home / 'airflow.db'}"
    assert env["AIRFLOW__API__PORT"] == "8000"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:8000/execution/"
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == "jip:admin"
