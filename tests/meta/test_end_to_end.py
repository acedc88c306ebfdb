"""The researcher's question, end to end on two sites.

"All CT series of the abdomen with slice thickness ≤ 3 mm from patients aged 50–70, by
manufacturer": site A receives its series through the store and indexes them with the
indexer component of `jip up`; a researcher asks the question over HTTP, saves the
cohort and exports it; a researcher of site B (its own data dir, catalog, index and
users) imports the file and gets B's matching series. Expected answers are computed
here from the parameters each series was made with.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.base.support import add_user, auth_for
from tests.meta import reference
from tests.meta.test_indexer import PlannedSeries, ingest, plan_series

from jip.app import build_app
from jip.base import users as users_module
from jip.base.schema import ProjectRole
from jip.config import Settings
from jip.embedded import meta_indexer
from jip.meta import MetaIndexer
from jip.meta.fields import ID_FIELD
from jip.runtime import Runtime, build_runtime
from jip.store import SeriesProjects

QUESTION = {"bool": {"filter": [
    {"term": {"Modality": "CT"}},
    {"term": {"BodyPartExamined": "ABDOMEN"}},
    {"range": {"SliceThickness": {"lte": 3}}},
    {"range": {"PatientAgeYears": {"gte": 50, "lte": 70}}},
]}}
BY_MANUFACTURER = {"by_manufacturer": {"terms": {"field": "Manufacturer"}}}


class Site:
    def __init__(self, runtime: Runtime, client: TestClient, expected: list[dict[str, Any]]):
        self.runtime, self.client, self.expected = runtime, client, expected


@pytest.fixture(autouse=True)
def cheap_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(users_module, "DEFAULT_COST", users_module.ScryptCost(n=2**10, r=8, p=1))


@pytest.fixture
def start_site(tmp_path: Path) -> Iterator[Any]:
    started: list[tuple[Runtime, MetaIndexer]] = []

    def start(name: str, planned: list[PlannedSeries], user: str, project: str) -> Site:
        url = f"http://{name}.test"
        settings = Settings(data_dir=tmp_path / name, auth={"public_url": url},
                            meta={"index_interval_s": 0.05})
        runtime = build_runtime(settings)
        indexer = meta_indexer(settings)  # as `jip up` runs it
        indexer.start()
        started.append((runtime, indexer))
        runtime.identity.projects.create(project)  # every series is the user's to search
        SeriesProjects(runtime.engine).add_rule(project, field="Modality", pattern="*")
        ingest(runtime, planned, tmp_path / f"{name}-spool")
        deadline = time.monotonic() + 60
        while runtime.catalog.unindexed(1) or runtime.index.count() < len(planned):
            assert time.monotonic() < deadline, f"{name} did not index its series"
            time.sleep(0.05)
        add_user(runtime, user, projects={project: ProjectRole.RESEARCHER})
        client = TestClient(build_app(runtime), base_url=url)
        client.headers.update(auth_for(client, user))
        return Site(runtime, client, [p.expected for p in planned])

    yield start
    for runtime, indexer in reversed(started):
        indexer.stop()
        runtime.close()


def test_a_cohort_found_on_one_site_runs_unchanged_on_another(start_site: Any,
                                                              tmp_path: Path) -> None:
    site_a = start_site("site-a", plan_series(200, seed=51), "alice", "liver")
    site_b = start_site("site-b", plan_series(150, seed=52), "bob", "hcc")

    # The question, with its facet, on site A.
    asked = site_a.client.post("/api/meta/search", json={
        "query": QUESTION, "aggs": BY_MANUFACTURER, "limit": 1000, "fields": [ID_FIELD]})
    assert asked.status_code == 200, asked.text
    answer = asked.json()
    matching_a = reference.search(site_a.expected, QUESTION)
    assert 0 < answer["total"] == len(matching_a)
    assert {h[ID_FIELD] for h in answer["hits"]} == {d[ID_FIELD] for d in matching_a}
    assert answer["aggregations"]["by_manufacturer"] == reference.terms(matching_a,
                                                                        "Manufacturer")

    # Saved and exported to a file.
    saved = site_a.client.post("/api/meta/cohorts", json={
        "name": "CT abdomen thin 50-70", "description": "for the liver volumetry study",
        "query": QUESTION})
    assert saved.status_code == 201, saved.text
    exported = site_a.client.get(f"/api/meta/cohorts/{saved.json()['id']}/export")
    export_file = tmp_path / "cohort.json"
    export_file.write_text(json.dumps(exported.json()))

    # Imported on site B: the same query finds B's own series.
    imported = site_b.client.post("/api/meta/cohorts/import",
                                  json=json.loads(export_file.read_text()))
    assert imported.status_code == 201, imported.text
    cohort_b = imported.json()
    assert (cohort_b["project"], cohort_b["query"]) == ("hcc", QUESTION)
    assert cohort_b["source_site"] == "http://site-a.test"
    series_b = site_b.client.get(f"/api/meta/cohorts/{cohort_b['id']}/series",
                                 params={"limit": 1000}).json()
    matching_b = reference.search(site_b.expected, QUESTION)
    assert 0 < series_b["total"] == len(matching_b)
    assert {h[ID_FIELD] for h in series_b["hits"]} == {d[ID_FIELD] for d in matching_b}
    assert not {h[ID_FIELD] for h in series_b["hits"]} & {d[ID_FIELD] for d in matching_a}
    facets_b = site_b.client.post("/api/meta/aggregate",
                                  json={"query": QUESTION, "aggs": BY_MANUFACTURER}).json()
    assert facets_b["aggregations"]["by_manufacturer"] == reference.terms(matching_b,
                                                                          "Manufacturer")

    # Site B's cohort follows B's data: a series deleted there leaves it.
    gone = matching_b[0][ID_FIELD]
    site_b.runtime.catalog.delete_series(gone)
    deadline = time.monotonic() + 20
    while site_b.client.get(f"/api/meta/cohorts/{cohort_b['id']}/series",
                            params={"limit": 0}).json()["total"] != len(matching_b) - 1:
        assert time.monotonic() < deadline, "the deleted series stayed in the cohort"
        time.sleep(0.05)
