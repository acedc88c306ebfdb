"""The `WorkflowEngine` port's promises, kept alike by `FakeEngine` and `AirflowEngine`.

Every test runs twice, on the self-test workflow (`dags/jip_selftest.py`): once on the
in-memory fake that the service, route and UI tests use, once on a real embedded Airflow
(slow). Airflow's scheduler moves runs on by itself; for the fake, `FakeDriver` plays the
self-test DAG through the fake's test controls (``list_series``, then one
``process_series`` instance per series). The tests check what the port promises; what
the DAG itself does under Airflow is tests/flow/test_engine_airflow.py's.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any, Protocol

import pytest
from tests.fakes.workflow_engine import FakeEngine
from tests.flow.selftest import (
    MAPPED,
    SELFTEST,
    mapped,
    series_uids,
    wait_for_run,
    wait_for_tasks,
)
from tests.support.network import free_port

from jip.errors import Conflict, Invalid, NotFound, Unavailable
from jip.flow.engine import RunState, TaskState, WorkflowEngine, WorkflowInfo, WorkflowRun
from jip.flow.engine_airflow import AirflowEngine

# The self-test workflow's parameters as Airflow reports them (see AirflowEngine).
SELFTEST_INFO = WorkflowInfo(
    dag_id=SELFTEST,
    description="JIP self-test: one task instance per series, no data touched.",
    params_schema={
        "type": "object",
        "properties": {
            "series": {"type": "array", "items": {"type": "string"}, "default": []},
            "fail_series": {"type": ["null", "string"], "default": None},
            "sleep_s": {"type": "number", "minimum": 0, "maximum": 3600, "default": 0},
        },
    },
    tags=("jip", "selftest"),
)


class Driver(Protocol):
    """An engine under test and what moves its runs on."""

    @property
    def engine(self) -> WorkflowEngine: ...

    def until_busy(self, run_id: str) -> None:
        """Until a ``process_series`` instance of the run is running."""

    def until_finished(self, run_id: str) -> WorkflowRun:
        """Until the run has finished; its final state."""

    def unreachable(self) -> WorkflowEngine:
        """An engine of the same kind that cannot be reached."""


class FakeDriver:
    """Plays the self-test DAG on a `FakeEngine`, as Airflow's scheduler runs it."""

    def __init__(self) -> None:
        self.engine = FakeEngine(SELFTEST_INFO)

    def until_busy(self, run_id: str) -> None:
        fake, conf = self.engine, self.engine.runs[run_id].conf
        fake.set_run(run_id, RunState.RUNNING)
        fake.add_task(run_id, "list_series", TaskState.SUCCESS, log="jip-selftest: listed")
        for index, uid in enumerate(conf.get("series", [])):
            log = f"jip-selftest: processing series {uid}"
            fake.add_task(run_id, MAPPED, TaskState.RUNNING, index, uid, log=log)

    def until_finished(self, run_id: str) -> WorkflowRun:
        fake = self.engine
        run = fake.get_run(SELFTEST, run_id)
        if run.state.finished:
            return run
        if not fake.tasks[run_id]:
            self.until_busy(run_id)
        for ti in fake.task_instances(SELFTEST, run_id):
            if not ti.state.finished:
                failed = ti.label is not None and ti.label == run.conf.get("fail_series")
                state = TaskState.FAILED if failed else TaskState.SUCCESS
                fake.set_task_state(SELFTEST, run_id, ti.task_id, state, ti.map_index)
        tasks = fake.task_instances(SELFTEST, run_id)
        failed = any(t.state in (TaskState.FAILED, TaskState.UPSTREAM_FAILED) for t in tasks)
        fake.set_run(run_id, RunState.FAILED if failed else RunState.SUCCESS)
        return fake.get_run(SELFTEST, run_id)

    def unreachable(self) -> WorkflowEngine:
        down = FakeEngine(SELFTEST_INFO)
        down.available = False
        return down


class AirflowDriver:
    """Waits for the real embedded Airflow (tests/flow/conftest.py) to move runs on."""

    def __init__(self, engine: AirflowEngine) -> None:
        self.engine = engine
        self._closing: list[AirflowEngine] = []

    def until_busy(self, run_id: str) -> None:
        wait_for_tasks(
            self.engine, run_id, lambda ts: any(t.state is TaskState.RUNNING for t in mapped(ts))
        )

    def until_finished(self, run_id: str) -> WorkflowRun:
        return wait_for_run(self.engine, run_id)

    def unreachable(self) -> WorkflowEngine:
        down = AirflowEngine(f"http://127.0.0.1:{free_port()}", username="jip", password="x")
        self._closing.append(down)
        return down

    def close(self) -> None:
        for engine in self._closing:
            engine.close()


@pytest.fixture(params=["fake", pytest.param("airflow", marks=pytest.mark.slow)])
def driver(request: pytest.FixtureRequest) -> Iterator[Driver]:
    if request.param == "fake":
        yield FakeDriver()
        return
    airflow = AirflowDriver(request.getfixturevalue("engine"))
    yield airflow
    airflow.close()


def new_run_id() -> str:
    return f"jip-contract-{uuid.uuid4().hex[:12]}"


def test_engine_satisfies_the_workflow_engine_port(driver: Driver) -> None:
    engine = driver.engine
    assert isinstance(engine, WorkflowEngine)
    assert engine.healthy()
    assert set(engine.health().values()) == {"healthy"}


def test_workflows_are_listed_sorted_and_described_alike(driver: Driver) -> None:
    workflows = driver.engine.list_workflows()

    ids = [w.dag_id for w in workflows]
    assert ids == sorted(ids)
    selftest = driver.engine.get_workflow(SELFTEST)
    assert selftest in workflows
    assert selftest.description and "self-test" in selftest.description
    assert not selftest.paused
    assert "jip" in selftest.tags
    properties = selftest.params_schema["properties"]
    assert selftest.params_schema["type"] == "object"
    assert properties["series"]["type"] == "array"
    assert properties["series"]["default"] == []
    assert properties["sleep_s"]["maximum"] == 3600


def test_trigger_starts_a_run_named_as_asked_or_by_the_engine(driver: Driver) -> None:
    engine, run_id = driver.engine, new_run_id()
    conf: dict[str, Any] = {"series": series_uids(1)}

    named = engine.trigger(SELFTEST, conf, run_id=run_id)
    unnamed = engine.trigger(SELFTEST, {"series": []})

    assert (named.dag_id, named.run_id) == (SELFTEST, run_id)
    assert named.state in (RunState.QUEUED, RunState.RUNNING)
    assert named.conf == conf
    assert unnamed.run_id not in ("", run_id)
    fetched = engine.get_run(SELFTEST, run_id)
    assert (fetched.run_id, fetched.conf) == (run_id, conf)
    newest = [r.run_id for r in engine.list_runs(SELFTEST, limit=2)]
    assert newest == [unnamed.run_id, run_id]  # newest first
    assert {unnamed.run_id, run_id} <= {r.run_id for r in engine.list_runs(limit=10)}
    with pytest.raises(Conflict):
        engine.trigger(SELFTEST, conf, run_id=run_id)
    for run in (named, unnamed):
        driver.until_finished(run.run_id)


def test_a_finished_run_reports_its_tasks_and_their_logs(driver: Driver) -> None:
    engine, uids = driver.engine, series_uids(2)
    run = engine.trigger(SELFTEST, {"series": uids})

    finished = driver.until_finished(run.run_id)

    assert finished.state is RunState.SUCCESS
    assert finished.conf["series"] == uids
    assert finished.started_at and finished.ended_at and finished.started_at <= finished.ended_at
    tasks = engine.task_instances(SELFTEST, run.run_id)
    assert [(t.task_id, t.map_index) for t in tasks] == [
        ("list_series", -1),
        (MAPPED, 0),
        (MAPPED, 1),
    ]
    assert all(t.state.finished and t.try_number == 1 for t in tasks)
    assert sorted(t.label or "" for t in mapped(tasks)) == sorted(uids)
    second = engine.get_task_instance(SELFTEST, run.run_id, MAPPED, map_index=1)
    assert second == tasks[2]
    text = engine.task_log(SELFTEST, run.run_id, MAPPED, map_index=1)
    assert f"processing series {second.label}" in text
    assert text == engine.task_log(SELFTEST, run.run_id, MAPPED, map_index=1, try_number=1)


def test_a_failed_task_fails_the_run(driver: Driver) -> None:
    uids = series_uids(2)
    run = driver.engine.trigger(SELFTEST, {"series": uids, "fail_series": uids[0]})

    assert driver.until_finished(run.run_id).state is RunState.FAILED
    states = {t.label: t.state for t in mapped(driver.engine.task_instances(SELFTEST, run.run_id))}
    assert states == {uids[0]: TaskState.FAILED, uids[1]: TaskState.SUCCESS}


def test_cancel_stops_running_tasks_and_skips_waiting_ones(driver: Driver) -> None:
    engine = driver.engine
    run = engine.trigger(SELFTEST, {"series": series_uids(2), "sleep_s": 300})
    driver.until_busy(run.run_id)

    cancelled = engine.cancel(SELFTEST, run.run_id)

    assert cancelled.state is RunState.CANCELLED
    assert engine.get_run(SELFTEST, run.run_id).state is RunState.CANCELLED
    assert cancelled.state.finished
    tasks = mapped(engine.task_instances(SELFTEST, run.run_id))
    assert all(t.state in (TaskState.FAILED, TaskState.SKIPPED) for t in tasks)
    with pytest.raises(Conflict, match="already finished"):
        engine.cancel(SELFTEST, run.run_id)


def test_marking_a_waiting_step_done_lets_the_run_finish(driver: Driver) -> None:
    # A sleeping task stands in for a human step waiting for someone to sign off.
    engine = driver.engine
    run = engine.trigger(SELFTEST, {"series": series_uids(1), "sleep_s": 300})
    driver.until_busy(run.run_id)
    with pytest.raises(Invalid, match="not running"):
        engine.set_task_state(SELFTEST, run.run_id, MAPPED, TaskState.RUNNING, map_index=0)

    marked = engine.set_task_state(SELFTEST, run.run_id, MAPPED, TaskState.SUCCESS, map_index=0)

    assert marked.state is TaskState.SUCCESS
    assert engine.get_task_instance(SELFTEST, run.run_id, MAPPED, 0).state is TaskState.SUCCESS
    assert driver.until_finished(run.run_id).state is RunState.SUCCESS


def test_conf_the_params_reject_is_invalid(driver: Driver) -> None:
    with pytest.raises(Invalid, match="series"):
        driver.engine.trigger(SELFTEST, {"series": "1.2.3"})
    with pytest.raises(Invalid, match="sleep_s"):
        driver.engine.trigger(SELFTEST, {"sleep_s": 7200})
    with pytest.raises(Invalid, match="limit"):
        driver.engine.list_runs(SELFTEST, limit=0)


def test_unknown_workflow_run_and_task_are_not_found(driver: Driver) -> None:
    engine = driver.engine
    with pytest.raises(NotFound, match="no-such-workflow"):
        engine.get_workflow("no-such-workflow")
    with pytest.raises(NotFound, match="no-such-workflow"):
        engine.trigger("no-such-workflow", {})
    with pytest.raises(NotFound, match="no-such-run"):
        engine.get_run(SELFTEST, "no-such-run")
    with pytest.raises(NotFound, match="no-such-run"):
        engine.task_instances(SELFTEST, "no-such-run")
    with pytest.raises(NotFound, match="no-such-run"):
        engine.cancel(SELFTEST, "no-such-run")
    run = engine.trigger(SELFTEST, {"series": series_uids(1)}, run_id=new_run_id())
    driver.until_finished(run.run_id)
    with pytest.raises(NotFound, match=run.run_id):
        engine.get_run("no-such-workflow", run.run_id)
    with pytest.raises(NotFound, match="no_such_task"):
        engine.task_log(SELFTEST, run.run_id, "no_such_task")
    with pytest.raises(NotFound, match="no_such_task"):
        engine.set_task_state(SELFTEST, run.run_id, "no_such_task", TaskState.SUCCESS)
    with pytest.raises(NotFound, match=MAPPED):
        engine.get_task_instance(SELFTEST, run.run_id, MAPPED, map_index=5)


def test_an_unreachable_engine_is_unavailable(driver: Driver) -> None:
    down = driver.unreachable()

    assert not down.healthy()
    with pytest.raises(Unavailable):
        down.health()
    with pytest.raises(Unavailable):
        down.list_workflows()
    with pytest.raises(Unavailable):
        down.trigger(SELFTEST, {"series": []})
    with pytest.raises(Unavailable):
        down.list_runs()
    with pytest.raises(Unavailable):
        down.get_run(SELFTEST, "any-run")
