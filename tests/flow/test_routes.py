"""The flow API on a fake workflow engine: starting, run state per series, results, reviews."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from jip_sdk.phantom import build_abdomen_phantom, write_truth_seg
from tests.fakes.workflow_engine import FakeEngine, series_workflow
from tests.flow.support import ingest_phantom

from jip.app import build_app
from jip.config import AuthSettings, Settings
from jip.flow.engine import RunState, TaskState
from jip.runtime import Runtime, build_runtime

SMALL = (6, 64, 64)


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    runtime = build_runtime(Settings(data_dir=tmp_path / "site", auth=AuthSettings(enabled=False)))
    yield runtime
    runtime.close()


@pytest.fixture
def fake() -> FakeEngine:
    return FakeEngine(
        series_workflow("organ-seg-radiomics", "organ-seg", "radiomics"),
        series_workflow("annotate-review", "organ-seg", "radiomics", review=True),
    )


@pytest.fixture
def client(runtime: Runtime, fake: FakeEngine) -> Iterator[TestClient]:
    app = build_app(runtime)
    app.state.runtime.workflow_engine = fake
    with TestClient(app) as client:
        yield client


@pytest.fixture
def ct(runtime: Runtime, tmp_path: Path) -> Any:
    return ingest_phantom(runtime, build_abdomen_phantom(shape=SMALL), tmp_path / "ct")


def start(client: TestClient, dag_id: str, **body: Any) -> Any:
    return client.post(f"/api/flow/workflows/{dag_id}/runs", json=body)


def test_workflows_carry_each_operators_parameter_schema(client: TestClient) -> None:
    answer = client.get("/api/flow/workflows/organ-seg-radiomics")
    assert answer.status_code == 200
    properties = answer.json()["params_schema"]["properties"]
    assert properties["organ-seg"]["properties"]["structures"]["items"]["enum"][0] == "body"
    assert properties["organ-seg"]["x-jip-operator"] == "organ-seg"
    assert properties["radiomics"]["properties"]["bin_width"]["default"] == 25
    assert properties["organ-seg"]["default"] == {}


def test_starting_a_run_records_it_and_hands_series_and_studies_to_the_engine(
    client: TestClient, fake: FakeEngine, ct: Any
) -> None:
    answer = start(
        client, "organ-seg-radiomics", series=[ct.series_instance_uid],
        params={"organ-seg": {"median_radius": 2}},
    )  # fmt: skip
    assert answer.status_code == 201, answer.text
    run = answer.json()
    assert run["run_id"].startswith("jip__") and run["created_by"] == "anonymous"
    conf = fake.runs[run["run_id"]].conf
    assert conf["series"] == [ct.series_instance_uid]
    assert conf["jip_studies"] == {ct.series_instance_uid: ct.study_instance_uid}
    assert conf["organ-seg"] == {"median_radius": 2}
    assert "jip_api_token" not in conf  # auth is off: nothing to hand over
    listed = client.get("/api/flow/runs").json()
    assert [r["run_id"] for r in listed] == [run["run_id"]]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"series": ["1.2.3.4"]}, 404, "series not in the store: 1.2.3.4"),
        ({"series": []}, 400, "at least one series"),
        ({"cohort_id": "c1"}, 404, "c1"),
        ({"params": {"organ-seg": {"median_radius": 9}}}, 400, "organ-seg/median_radius"),
        ({"params": {"organ-seg": {"nope": 1}}}, 400, "nope"),
        ({"params": {"segmenter": {}}}, 400, "segmenter: unknown parameter"),
    ],
)
def test_bad_run_requests_are_refused_before_anything_starts(
    client: TestClient, fake: FakeEngine, ct: Any, body: dict[str, Any], status: int, message: str
) -> None:
    body.setdefault("series", [ct.series_instance_uid] if "cohort_id" not in body else [])
    answer = start(client, "organ-seg-radiomics", **body)
    assert answer.status_code == status, answer.text
    assert message in answer.json()["detail"]
    assert fake.runs == {}


def test_a_run_starts_on_a_saved_cohort(
    client: TestClient, fake: FakeEngine, runtime: Runtime, ct: Any
) -> None:
    from jip.base.auth import ANONYMOUS_ADMIN
    from jip.base.identity import site_url
    from jip.meta.cohorts import Cohorts

    runtime.identity.projects.create("liver-study")
    cohort = Cohorts(runtime.engine, runtime.index, site_url(runtime.settings)).create(
        ANONYMOUS_ADMIN, name="abdomen CT", query={"term": {"Modality": "CT"}},
        project="liver-study", series=[ct.series_instance_uid],
    )  # fmt: skip
    answer = start(client, "organ-seg-radiomics", cohort_id=cohort.id)
    assert answer.status_code == 201, answer.text
    assert answer.json()["cohort_id"] == cohort.id
    assert fake.runs[answer.json()["run_id"]].conf["series"] == [ct.series_instance_uid]


def test_run_reports_state_per_task_and_per_series(
    client: TestClient, fake: FakeEngine, ct: Any
) -> None:
    other = "1.2.826.0.1.3680043.8.498.1"
    run_id = start(client, "organ-seg-radiomics", series=[ct.series_instance_uid]).json()["run_id"]
    fake.runs[run_id].conf["series"].append(other)  # a second series, not in this store
    fake.set_run(run_id, RunState.RUNNING)
    fake.add_task(run_id, "list_series", TaskState.SUCCESS)
    fake.add_task(run_id, "series.organ-seg", TaskState.SUCCESS, 0, ct.series_instance_uid)
    fake.add_task(run_id, "series.organ-seg", TaskState.FAILED, 1, other, log="needs CT")
    fake.add_task(run_id, "series.radiomics", TaskState.RUNNING, 0, "0")
    fake.add_task(run_id, "series.radiomics", TaskState.UPSTREAM_FAILED, 1, "1")
    detail = client.get(f"/api/flow/runs/{run_id}").json()
    assert detail["tasks_total"] == 5 and detail["tasks_finished"] == 4
    per_series = {s["series_instance_uid"]: s for s in detail["per_series"]}
    assert per_series[ct.series_instance_uid]["state"] == "running"
    assert per_series[ct.series_instance_uid]["tasks"] == {
        "organ-seg": "success",
        "radiomics": "running",
    }
    assert per_series[other]["state"] == "failed"
    logs = client.get(f"/api/flow/runs/{run_id}/logs", params={"task": "organ-seg", "series": other})
    assert logs.status_code == 200 and "needs CT" in logs.text
    assert f"series.organ-seg [{other}] (failed)" in logs.text
    missing = client.get(f"/api/flow/runs/{run_id}/logs", params={"task": "nope"})
    assert missing.status_code == 404 and "organ-seg" in missing.json()["detail"]


def test_results_are_recorded_once_listed_and_downloadable(
    client: TestClient, runtime: Runtime, ct: Any
) -> None:
    run_id = start(client, "organ-seg-radiomics", series=[ct.series_instance_uid]).json()["run_id"]
    results_root = Path(runtime.settings.resolved_results_url.removeprefix("file://"))
    key = f"runs/{run_id}/1.2.3/radiomics.csv"
    (results_root / key).parent.mkdir(parents=True)
    (results_root / key).write_text("a,b\n1,2\n")
    body = {
        "results": [
            {"series_instance_uid": ct.series_instance_uid, "operator": "radiomics",
             "kind": "file", "key": key, "name": "1.2.3/radiomics.csv", "size_bytes": 8},
            {"series_instance_uid": ct.series_instance_uid, "operator": "organ-seg",
             "kind": "dicom", "key": "1.2.3", "name": "seg.dcm", "size_bytes": 100,
             "result_series_uid": "1.2.3", "study_instance_uid": ct.study_instance_uid,
             "modality": "SEG"},
        ]
    }  # fmt: skip
    first = client.post(f"/api/flow/runs/{run_id}/results", json=body)
    again = client.post(f"/api/flow/runs/{run_id}/results", json=body)  # a retried task
    assert first.status_code == again.status_code == 201
    assert [r["id"] for r in first.json()] == [r["id"] for r in again.json()]
    listed = client.get(f"/api/flow/runs/{run_id}/results").json()
    assert len(listed) == 2
    csv = next(r for r in listed if r["kind"] == "file")
    download = client.get(csv["url"])
    assert download.status_code == 200 and download.text == "a,b\n1,2\n"
    seg = next(r for r in listed if r["kind"] == "dicom")
    assert seg["url"] == f"/dicom-web/studies/{ct.study_instance_uid}/series/1.2.3"
    redirect = client.get(f"/api/flow/runs/{run_id}/results/{seg['id']}", follow_redirects=False)
    assert redirect.status_code == 303 and redirect.headers["location"] == seg["url"]


def test_human_step_is_marked_done_per_series(
    client: TestClient, fake: FakeEngine, ct: Any
) -> None:
    run_id = start(client, "annotate-review", series=[ct.series_instance_uid]).json()["run_id"]
    fake.add_task(run_id, "series.annotate", TaskState.WAITING, 0, "0")
    review = f"/api/flow/runs/{run_id}/reviews/{ct.series_instance_uid}"
    assert client.get(review).json()["done"] is False
    done = client.post(f"/api/flow/runs/{run_id}/tasks/annotate/done")
    assert done.status_code == 200, done.text
    assert client.get(review).json()["done"] is True
    wrong = client.post(f"/api/flow/runs/{run_id}/tasks/organ-seg/done")
    assert wrong.status_code == 404
    unknown = client.post(f"/api/flow/runs/{run_id}/tasks/annotate/done", json={"series": ["9.9"]})
    assert unknown.status_code == 400
    fake.set_run(run_id, RunState.SUCCESS)
    late = client.post(f"/api/flow/runs/{run_id}/tasks/annotate/done")
    assert late.status_code == 409


def test_corrected_seg_is_stored_recorded_and_ends_the_review(
    client: TestClient, fake: FakeEngine, runtime: Runtime, tmp_path: Path
) -> None:
    phantom = build_abdomen_phantom(shape=SMALL)
    ct = ingest_phantom(runtime, phantom, tmp_path / "ct")
    seg_path = write_truth_seg(phantom, ct.series, tmp_path / "seg", organs=("liver",))
    run_id = start(client, "annotate-review", series=[ct.series_instance_uid]).json()["run_id"]
    fake.add_task(run_id, "series.annotate", TaskState.WAITING, 0, "0")
    not_seg = client.post(
        f"/api/flow/runs/{run_id}/tasks/annotate/seg",
        files={"files": ("ct.dcm", next(ct.series.path.glob("*.dcm")).read_bytes())},
    )
    assert not_seg.status_code == 400 and "not a Segmentation" in not_seg.json()["detail"]
    answer = client.post(
        f"/api/flow/runs/{run_id}/tasks/annotate/seg",
        files={"files": ("seg.dcm", seg_path.read_bytes(), "application/dicom")},
    )
    assert answer.status_code == 200, answer.text
    seg_uid = seg_path.parent.name
    assert answer.json()[0]["seg_series_instance_uid"] == seg_uid
    assert runtime.catalog.instances_of_series(seg_uid)
    results = client.get(f"/api/flow/runs/{run_id}/results").json()
    assert [(r["operator"], r["result_series_uid"]) for r in results] == [("annotate", seg_uid)]


def test_rules_are_added_listed_switched_and_removed(client: TestClient) -> None:
    rule = {"name": "ct-seg", "dag_id": "organ-seg-radiomics", "query": {"term": {"Modality": "CT"}}}
    added = client.post("/api/flow/rules", json=rule)
    assert added.status_code == 201, added.text
    assert client.post("/api/flow/rules", json=rule).status_code == 409
    bad = client.post("/api/flow/rules", json={**rule, "name": "x", "query": {"term": {"Nope": 1}}})
    assert bad.status_code == 400 and "Nope" in bad.json()["detail"]
    unknown = client.post("/api/flow/rules", json={**rule, "name": "y", "dag_id": "missing"})
    assert unknown.status_code == 404
    assert client.patch("/api/flow/rules/ct-seg", json={"enabled": False}).json()["enabled"] is False
    assert [r["name"] for r in client.get("/api/flow/rules").json()] == ["ct-seg"]
    assert client.get("/api/flow/rules/ct-seg/firings").json() == []
    assert client.delete("/api/flow/rules/ct-seg").status_code == 204
    assert client.get("/api/flow/rules/ct-seg").status_code == 404


def test_an_unreachable_engine_is_503(client: TestClient, fake: FakeEngine) -> None:
    fake.available = False
    answer = client.get("/api/flow/workflows")
    assert answer.status_code == 503


def test_with_auth_a_run_gets_its_own_token_not_the_callers_and_rules_need_an_admin(
    tmp_path: Path, fake: FakeEngine
) -> None:
    from tests.base.support import add_user, site_settings, tokens_for

    from jip.base.schema import ProjectRole

    runtime = build_runtime(site_settings(tmp_path / "auth-site"))
    # A run is on series of the caller's projects; the phantom lands in the default one.
    add_user(runtime, "rita", projects={"default": ProjectRole.RESEARCHER})
    ct = ingest_phantom(runtime, build_abdomen_phantom(shape=SMALL), tmp_path / "ct")
    app = build_app(runtime)
    app.state.runtime.workflow_engine = fake
    try:
        with TestClient(app) as client:
            assert client.get("/api/flow/workflows").status_code == 401
            token = tokens_for(client, "rita")["access_token"]
            headers = {"Authorization": f"Bearer {token}"}
            answer = client.post(
                "/api/flow/workflows/organ-seg-radiomics/runs",
                json={"series": [ct.series_instance_uid]},
                headers=headers,
            )
            assert answer.status_code == 201, answer.text
            assert answer.json()["created_by"] == "rita"
            run_id = answer.json()["run_id"]
            # The caller's token never reaches the run; the run has one of its own,
            # kept by the engine outside the conf (an Airflow Connection).
            assert token not in str(fake.runs[run_id].conf)
            assert "jip_api_token" not in fake.runs[run_id].conf
            assert fake.runs[run_id].conf["jip_run_token"] is True
            assert fake.run_tokens[run_id] not in ("", token)
            rule = {"name": "r", "dag_id": "organ-seg-radiomics"}
            assert client.post("/api/flow/rules", json=rule, headers=headers).status_code == 403
    finally:
        runtime.close()
