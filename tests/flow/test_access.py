"""Who may do what to a workflow run, with authentication on (a fake workflow engine).

Viewers read runs, logs and results of their projects; starting, cancelling, reviewing
and uploading need the researcher role; results are recorded only with the run's own
token and only under ``runs/<run_id>/``; a run's token acts for its own run and ends
with it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from jip_sdk.phantom import build_abdomen_phantom, write_truth_seg
from tests.base.support import add_user, auth_for, bearer, site_settings
from tests.fakes.workflow_engine import FakeEngine, series_workflow
from tests.flow.support import ingest_phantom

from jip.app import build_app
from jip.base.schema import ProjectRole
from jip.flow import records
from jip.flow.engine import RunState, TaskState
from jip.flow.schema import ResultKind
from jip.runtime import Runtime, build_runtime
from jip.store import SeriesProjects

SMALL = (6, 64, 64)
SEG = "organ-seg-radiomics"
REVIEW = "annotate-review"


@dataclass
class Site:
    runtime: Runtime
    client: TestClient
    fake: FakeEngine
    ct: Any  # a series of project "default"
    other: Any  # a series of project "other" only
    phantom: Any


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    runtime = build_runtime(site_settings(tmp_path / "site"))
    add_user(runtime, "admin", admin=True)
    add_user(runtime, "rita", projects={"default": ProjectRole.RESEARCHER})
    add_user(runtime, "vera", projects={"default": ProjectRole.VIEWER})
    add_user(runtime, "olga", projects={"other": ProjectRole.RESEARCHER})
    phantom = build_abdomen_phantom(shape=SMALL)
    ct = ingest_phantom(runtime, phantom, tmp_path / "ct", patient_id="ACCESS-A")
    other = ingest_phantom(runtime, phantom, tmp_path / "other", patient_id="ACCESS-B")
    assignments = SeriesProjects(runtime.engine)
    assignments.assign(other.series_instance_uid, "other")
    assignments.unassign(other.series_instance_uid, "default")
    fake = FakeEngine(
        series_workflow(SEG, "organ-seg", "radiomics"),
        series_workflow(REVIEW, "organ-seg", "radiomics", review=True),
    )
    app = build_app(runtime)
    app.state.runtime.workflow_engine = fake
    try:
        with TestClient(app) as client:
            yield Site(runtime, client, fake, ct, other, phantom)
    finally:
        runtime.close()


def _start(site: Site, who: str, series: Any, dag_id: str = SEG) -> Any:
    return site.client.post(
        f"/api/flow/workflows/{dag_id}/runs",
        json={"series": [series.series_instance_uid]},
        headers=auth_for(site.client, who),
    )


def _started(site: Site, who: str, series: Any, dag_id: str = SEG) -> str:
    answer = _start(site, who, series, dag_id)
    assert answer.status_code == 201, answer.text
    run_id: str = answer.json()["run_id"]
    return run_id


def _file_result(series: Any, key: str) -> dict[str, Any]:
    return {
        "series_instance_uid": series.series_instance_uid, "operator": "radiomics",
        "kind": "file", "key": key, "name": key.rsplit("/", 1)[-1], "size_bytes": 7,
    }  # fmt: skip


def _write_result(site: Site, key: str, text: str) -> None:
    root = Path(site.runtime.settings.resolved_results_url.removeprefix("file://"))
    (root / key).parent.mkdir(parents=True, exist_ok=True)
    (root / key).write_text(text)


def test_a_viewer_reads_runs_but_may_not_start_cancel_review_or_upload(site: Site) -> None:
    assert _start(site, "vera", site.ct).status_code == 403
    assert site.fake.runs == {}
    run_id = _started(site, "rita", site.ct, REVIEW)
    site.fake.set_run(run_id, RunState.RUNNING)
    site.fake.add_task(run_id, "series.annotate", TaskState.WAITING, 0, "0", log="waiting")
    vera = auth_for(site.client, "vera")
    assert site.client.get(f"/api/flow/runs/{run_id}", headers=vera).status_code == 200
    logs = site.client.get(f"/api/flow/runs/{run_id}/logs", headers=vera)
    assert logs.status_code == 200 and "waiting" in logs.text
    assert site.client.get(f"/api/flow/runs/{run_id}/results", headers=vera).status_code == 200

    refused = [
        site.client.post(f"/api/flow/runs/{run_id}/cancel", headers=vera),
        site.client.post(f"/api/flow/runs/{run_id}/tasks/annotate/done", headers=vera),
        site.client.post(
            f"/api/flow/runs/{run_id}/tasks/annotate/seg",
            files={"files": ("seg.dcm", _seg_bytes(site), "application/dicom")},
            headers=vera,
        ),
    ]
    assert [r.status_code for r in refused] == [403, 403, 403], [r.text for r in refused]
    assert "researcher role" in refused[0].json()["detail"]
    assert site.fake.runs[run_id].state is RunState.RUNNING
    assert records.find_review(site.runtime.engine, run_id, site.ct.series_instance_uid) is None
    # The researcher of the run's project may.
    rita = auth_for(site.client, "rita")
    done = site.client.post(f"/api/flow/runs/{run_id}/tasks/annotate/done", headers=rita)
    assert done.status_code == 200, done.text
    assert site.client.post(f"/api/flow/runs/{run_id}/cancel", headers=rita).status_code == 200


def _seg_bytes(site: Site) -> bytes:
    folder = Path(site.runtime.settings.data_dir).parent / "seg"
    return write_truth_seg(site.phantom, site.ct.series, folder, organs=("liver",)).read_bytes()


def test_results_are_recorded_only_with_the_runs_own_token_under_its_own_folder(
    site: Site,
) -> None:
    run_id = _started(site, "rita", site.ct)
    other_run = _started(site, "rita", site.ct)
    token = bearer(site.fake.run_tokens[run_id])
    url = f"/api/flow/runs/{run_id}/results"
    good = {"results": [_file_result(site.ct, f"runs/{run_id}/{site.ct.series_instance_uid}/f.csv")]}
    for person in ("vera", "rita", "admin"):
        answer = site.client.post(url, json=good, headers=auth_for(site.client, person))
        assert answer.status_code == 403, (person, answer.text)
    other_token = bearer(site.fake.run_tokens[other_run])
    assert site.client.post(url, json=good, headers=other_token).status_code == 403
    assert site.client.post(url, json=good, headers=token).status_code == 201

    for key in (f"runs/{other_run}/x.csv", "blobs/1.2.3/4.dcm", f"runs/{run_id}/../x.csv", "runs/"):
        answer = site.client.post(url, json={"results": [_file_result(site.ct, key)]}, headers=token)
        assert answer.status_code == 400, (key, answer.text)
    dicom = {**_file_result(site.ct, "1.2.3"), "kind": "dicom", "result_series_uid": "1.2.4"}
    assert site.client.post(url, json={"results": [dicom]}, headers=token).status_code == 400
    foreign = _file_result(site.other, f"runs/{run_id}/x.csv")  # not a series of the run
    answer = site.client.post(url, json={"results": [foreign]}, headers=token)
    assert answer.status_code in (400, 404)


def test_a_result_key_of_another_project_cannot_be_downloaded(site: Site) -> None:
    secret_run = _started(site, "olga", site.other)
    secret_key = f"runs/{secret_run}/{site.other.series_instance_uid}/secret.csv"
    _write_result(site, secret_key, "secret")
    recorded = site.client.post(
        f"/api/flow/runs/{secret_run}/results",
        json={"results": [_file_result(site.other, secret_key)]},
        headers=bearer(site.fake.run_tokens[secret_run]),
    )
    assert recorded.status_code == 201, recorded.text
    vera = auth_for(site.client, "vera")
    (secret,) = site.client.get(
        f"/api/flow/runs/{secret_run}/results", headers=auth_for(site.client, "olga")
    ).json()
    assert site.client.get(secret["url"], headers=vera).status_code == 404

    # Vera's own run cannot take the key: she may not record, nor may her run's token.
    run_id = _started(site, "rita", site.ct)
    forged = {"results": [{**_file_result(site.ct, secret_key)}]}
    url = f"/api/flow/runs/{run_id}/results"
    assert site.client.post(url, json=forged, headers=vera).status_code == 403
    run_token = bearer(site.fake.run_tokens[run_id])
    assert site.client.post(url, json=forged, headers=run_token).status_code == 400
    # A row recorded before keys were checked is never served.
    (legacy,) = records.add_results(
        site.runtime.engine,
        [records.ResultRecord(id=None, run_id=run_id, series_instance_uid=site.ct.series_instance_uid,
                              operator="x", kind=ResultKind.FILE, key=secret_key, name="s.csv",
                              size_bytes=6)],
    )  # fmt: skip
    download = site.client.get(f"/api/flow/runs/{run_id}/results/{legacy.id}", headers=vera)
    assert download.status_code == 403 and "secret" not in download.text


def test_a_runs_token_acts_for_its_own_run_only_and_ends_with_it(site: Site) -> None:
    rita = auth_for(site.client, "rita")
    run_id = _started(site, "rita", site.ct)
    other_run = _started(site, "rita", site.ct)
    token = bearer(site.fake.run_tokens[run_id])
    assert site.fake.run_tokens[run_id] not in str(site.fake.runs[run_id].conf)
    assert site.client.get(f"/api/flow/runs/{run_id}", headers=token).status_code == 200
    assert site.client.get(f"/api/flow/runs/{other_run}", headers=token).status_code == 404
    assert _start_with(site, token).status_code == 403
    assert site.client.post(f"/api/flow/runs/{run_id}/cancel", headers=token).status_code == 403
    # The run's series can be read with it (its tasks fetch them).
    series = site.client.get(
        "/dicom-web/series", params={"SeriesInstanceUID": site.ct.series_instance_uid},
        headers=token,
    )  # fmt: skip
    assert series.status_code == 200 and series.json()

    # The run ends: the first look at it closes its token.
    site.fake.set_run(run_id, RunState.SUCCESS)
    assert site.client.get(f"/api/flow/runs/{run_id}", headers=rita).status_code == 200
    assert site.client.get(f"/api/flow/runs/{run_id}", headers=token).status_code == 401
    assert run_id not in site.fake.run_tokens
    # Cancelling ends the token at once.
    other_token = bearer(site.fake.run_tokens[other_run])
    assert site.client.post(f"/api/flow/runs/{other_run}/cancel", headers=rita).status_code == 200
    assert site.client.get(f"/api/flow/runs/{other_run}", headers=other_token).status_code == 401
    assert other_run not in site.fake.run_tokens


def test_runs_nobody_looked_at_are_closed_by_the_sweep(site: Site) -> None:
    from jip.flow.service import FlowService

    run_id = _started(site, "rita", site.ct)
    token = bearer(site.fake.run_tokens[run_id])
    site.fake.set_run(run_id, RunState.FAILED)
    service = FlowService(
        db=site.runtime.engine,
        engine=site.fake,
        operators_dir=site.runtime.settings.flow.operators_dir,
        tokens=_policy(site),
    )
    assert service.close_ended_runs() == 1
    assert service.close_ended_runs() == 0
    assert site.client.get(f"/api/flow/runs/{run_id}", headers=token).status_code == 401


def _policy(site: Site) -> Any:
    from jip.flow.run_tokens import RunTokenPolicy

    return RunTokenPolicy.from_settings(site.runtime.settings, site.runtime.identity)


def _start_with(site: Site, headers: dict[str, str]) -> Any:
    return site.client.post(
        f"/api/flow/workflows/{SEG}/runs",
        json={"series": [site.ct.series_instance_uid]},
        headers=headers,
    )
