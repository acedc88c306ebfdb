"""The flow service on a fake engine: a run is recorded before it starts, the operators
folder must exist, the researcher's run list is scoped in SQL, the review poll interval."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from jip_sdk.phantom import build_abdomen_phantom
from sqlalchemy import event
from tests.fakes.workflow_engine import FakeEngine, series_workflow
from tests.flow.support import ingest_phantom

from jip.config import AuthSettings, FlowSettings, Settings
from jip.errors import Unavailable
from jip.flow import RunState
from jip.flow.engine import WorkflowRun
from jip.flow.models import StartRun
from jip.flow.records import find_run
from jip.flow.service import FlowService
from jip.flow.worker.runner import operators_dir
from jip.runtime import Runtime, build_runtime
from jip.store import SeriesProjects

SMALL = (4, 64, 64)
WORKFLOW = "organ-seg-radiomics"


class BrokenTrigger(FakeEngine):
    """An engine that answers everything but refuses to start runs."""

    def trigger(
        self, dag_id: str, conf: Mapping[str, Any], run_id: str | None = None
    ) -> WorkflowRun:
        raise Unavailable("Airflow answered 503 for workflow 'organ-seg-radiomics'")


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    runtime = build_runtime(Settings(data_dir=tmp_path / "site", auth=AuthSettings(enabled=False)))
    yield runtime
    runtime.close()


@pytest.fixture
def ct(runtime: Runtime, tmp_path: Path) -> Any:
    return ingest_phantom(runtime, build_abdomen_phantom(shape=SMALL), tmp_path / "ct")


def service(runtime: Runtime, engine: FakeEngine, **kwargs: Any) -> FlowService:
    kwargs.setdefault("operators_dir", operators_dir(runtime.settings))
    return FlowService(db=runtime.engine, engine=engine, **kwargs)


def test_a_run_whose_trigger_fails_is_recorded_failed(runtime: Runtime, ct: Any) -> None:
    flow = service(runtime, BrokenTrigger(series_workflow(WORKFLOW, "organ-seg")))

    with pytest.raises(Unavailable, match="503"):
        flow.start(WORKFLOW, StartRun(series=[ct.series_instance_uid]), user="rita")

    [run] = service(runtime, FakeEngine(), scope={"default"}).runs()  # recorded, not in Airflow
    assert run.state is RunState.FAILED
    assert run.note and "503" in run.note
    record = find_run(runtime.engine, run.run_id)
    assert record is not None and record.created_by == "rita" and record.start_error
    assert flow.run(run.run_id).state is RunState.FAILED


def test_a_run_is_recorded_before_the_engine_is_asked(runtime: Runtime, ct: Any) -> None:
    seen: list[bool] = []

    class Recorder(FakeEngine):
        def trigger(
            self, dag_id: str, conf: Mapping[str, Any], run_id: str | None = None
        ) -> WorkflowRun:
            seen.append(run_id is not None and find_run(runtime.engine, run_id) is not None)
            return super().trigger(dag_id, conf, run_id)

    flow = service(runtime, Recorder(series_workflow(WORKFLOW, "organ-seg")))
    run = flow.start(WORKFLOW, StartRun(series=[ct.series_instance_uid]), user="rita")

    assert seen == [True]
    record = find_run(runtime.engine, run.run_id)
    assert record is not None and record.start_error is None


def test_without_an_operators_folder_runs_are_refused_not_left_unchecked(
    runtime: Runtime, ct: Any, tmp_path: Path
) -> None:
    fake = FakeEngine(series_workflow(WORKFLOW, "organ-seg"))
    flow = service(runtime, fake, operators_dir=tmp_path / "no-operators")

    with pytest.raises(Unavailable, match=r"operators folder .*flow\.operators_dir"):
        flow.start(WORKFLOW, StartRun(series=[ct.series_instance_uid]), user="rita")
    assert fake.runs == {}


def test_researchers_see_their_runs_among_many_in_a_constant_number_of_queries(
    runtime: Runtime, ct: Any, tmp_path: Path
) -> None:
    runtime.identity.projects.create("elsewhere")
    other = ingest_phantom(runtime, build_abdomen_phantom(shape=SMALL), tmp_path / "other")
    projects = SeriesProjects(runtime.engine)
    projects.assign(other.series_instance_uid, "elsewhere")
    projects.unassign(other.series_instance_uid, "default")
    fake = FakeEngine(series_workflow(WORKFLOW, "organ-seg"))
    admin = service(runtime, fake)
    mine = [
        admin.start(WORKFLOW, StartRun(series=[ct.series_instance_uid]), user="rita").run_id
        for _ in range(3)
    ]
    for _ in range(5):  # newer runs on series the researcher may not see
        admin.start(WORKFLOW, StartRun(series=[other.series_instance_uid]), user="otto")
    researcher = service(runtime, fake, scope={"default"})

    statements: list[str] = []
    event.listen(runtime.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    listed = researcher.runs(limit=2)

    assert [r.run_id for r in listed] == mine[::-1][:2]
    assert len(statements) == 1
    assert len(admin.runs(limit=50)) == 8


def test_the_review_trigger_polls_at_the_sites_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("airflow")
    from jip.flow.worker import operators

    settings = Settings(flow=FlowSettings(review_poll_s=0.25))
    monkeypatch.setattr(operators, "task_settings", lambda: settings)

    assert operators.review_poll_s(None) == 0.25
    assert operators.review_poll_s(3.0) == 3.0
