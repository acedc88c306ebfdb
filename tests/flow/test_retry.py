"""Retrying a run's failed series, with authentication on (the fake workflow engine).

A retry is a new run of the same workflow and parameters on the failed series only,
linked to the first; it needs the researcher role in the run's projects, and a run
still under way or without a failed series is refused.
"""

# ruff: noqa: F811
from __future__ import annotations

from pathlib import Path

from tests.base.support import auth_for
from tests.flow.support import ingest_phantom

# The auth-on site with a fake engine of the access tests, imported rather than copied; its
# fixture must keep its name, so the tests' "site" arguments shadow the import (F811).
from tests.flow.test_access import SEG, Site, _started, site  # noqa: F401

from jip.flow.engine import RunState, TaskState
from jip.flow.service import RETRY_OF_KEY

PARAMS = {"radiomics": {"bin_width": 10}}


def _failed_run(site: Site, tmp_path: Path) -> tuple[str, str, str]:
    """A finished run on two series of project default: the first succeeded, the
    second failed at organ-seg (radiomics then upstream_failed)."""
    second = ingest_phantom(site.runtime, site.phantom, tmp_path / "b", patient_id="RETRY-B")
    ok, bad = site.ct.series_instance_uid, second.series_instance_uid
    answer = site.client.post(
        f"/api/flow/workflows/{SEG}/runs",
        json={"series": [ok, bad], "params": PARAMS},
        headers=auth_for(site.client, "rita"),
    )
    assert answer.status_code == 201, answer.text
    run_id: str = answer.json()["run_id"]
    for index, uid, seg, radiomics in (
        (0, ok, TaskState.SUCCESS, TaskState.SUCCESS),
        (1, bad, TaskState.FAILED, TaskState.UPSTREAM_FAILED),
    ):
        site.fake.add_task(run_id, "series.organ-seg", seg, index, uid)
        site.fake.add_task(run_id, "series.radiomics", radiomics, index, uid)
    site.fake.set_run(run_id, RunState.FAILED)
    return run_id, ok, bad


def test_a_retry_runs_only_the_failed_series_with_the_same_params(
    site: Site, tmp_path: Path
) -> None:
    run_id, _ok, bad = _failed_run(site, tmp_path)
    rita = auth_for(site.client, "rita")
    answer = site.client.post(f"/api/flow/runs/{run_id}/retry", headers=rita)
    assert answer.status_code == 201, answer.text
    retry = answer.json()
    assert retry["run_id"] != run_id
    assert retry["series"] == [bad]
    assert retry["params"] == PARAMS
    assert retry["created_by"] == "rita"
    conf = site.fake.runs[retry["run_id"]].conf
    assert conf["series"] == [bad] and conf[RETRY_OF_KEY] == run_id
    assert conf["radiomics"] == PARAMS["radiomics"]
    detail = site.client.get(f"/api/flow/runs/{retry['run_id']}", headers=rita).json()
    assert detail["retry_of"] == run_id
    first = site.client.get(f"/api/flow/runs/{run_id}", headers=rita).json()
    assert first["retry_of"] is None and first["state"] == "failed"  # left as it was
    assert retry["run_id"] in site.fake.run_tokens  # the retry has a token of its own


def test_viewers_and_other_projects_may_not_retry(site: Site, tmp_path: Path) -> None:
    run_id, _ok, _bad = _failed_run(site, tmp_path)
    before = set(site.fake.runs)
    vera = site.client.post(f"/api/flow/runs/{run_id}/retry", headers=auth_for(site.client, "vera"))
    assert vera.status_code == 403 and "researcher role" in vera.json()["detail"]
    olga = site.client.post(f"/api/flow/runs/{run_id}/retry", headers=auth_for(site.client, "olga"))
    assert olga.status_code == 404  # a run of another project does not exist for her
    token = {"Authorization": f"Bearer {site.fake.run_tokens[run_id]}"}
    assert site.client.post(f"/api/flow/runs/{run_id}/retry", headers=token).status_code == 403
    assert site.client.post(f"/api/flow/runs/{run_id}/retry").status_code == 401
    assert set(site.fake.runs) == before


def test_a_run_under_way_or_without_failures_is_not_retried(site: Site) -> None:
    rita = auth_for(site.client, "rita")
    run_id = _started(site, "rita", site.ct)
    site.fake.set_run(run_id, RunState.RUNNING)
    site.fake.add_task(run_id, "series.organ-seg", TaskState.RUNNING, 0, "0")
    under_way = site.client.post(f"/api/flow/runs/{run_id}/retry", headers=rita)
    assert under_way.status_code == 409 and "wait for it to end" in under_way.json()["detail"]
    site.fake.tasks[run_id].clear()
    site.fake.add_task(
        run_id, "series.organ-seg", TaskState.SUCCESS, 0, site.ct.series_instance_uid
    )
    site.fake.set_run(run_id, RunState.SUCCESS)
    clean = site.client.post(f"/api/flow/runs/{run_id}/retry", headers=rita)
    assert clean.status_code == 400 and "no failed series" in clean.json()["detail"]
    assert list(site.fake.runs) == [run_id]


def test_a_run_that_never_started_is_retried_whole(site: Site, tmp_path: Path) -> None:
    second = ingest_phantom(site.runtime, site.phantom, tmp_path / "b", patient_id="RETRY-C")
    series = [site.ct.series_instance_uid, second.series_instance_uid]
    rita = auth_for(site.client, "rita")
    started = site.client.post(
        f"/api/flow/workflows/{SEG}/runs", json={"series": series}, headers=rita
    )
    run_id = started.json()["run_id"]
    site.fake.set_run(run_id, RunState.FAILED)  # Airflow failed it before any task ran
    answer = site.client.post(f"/api/flow/runs/{run_id}/retry", headers=rita)
    assert answer.status_code == 201, answer.text
    assert answer.json()["series"] == series
