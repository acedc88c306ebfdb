"""The ``Projects`` field shows a caller only the caller's projects: in search hits, in
facets, in field values, in cohort pages, and when a query asks about it (issue #12: a
researcher saw the names of the other projects a series also belongs to). Site admins
see every project."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from tests.meta.secured import SecuredSite, secured_site

from jip.meta.fields import ID_FIELD

PROJECT_FACETS = {"projects": {"terms": {"field": "Projects", "size": 50}},
                  "how_many": {"cardinality": {"field": "Projects"}}}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredSite]:
    with secured_site(tmp_path_factory.mktemp("visibility"), series=6) as site:
        yield site


def _search(site: SecuredSite, user: str, **body: Any) -> dict[str, Any]:
    response = site.client.post("/api/meta/search", json={"limit": 100, **body},
                                headers=site.tokens[user])
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def _projects_by_series(found: dict[str, Any]) -> dict[str, list[str]]:
    return {hit[ID_FIELD]: hit["Projects"] for hit in found["hits"]}


@pytest.mark.parametrize("user", ["alice", "vic"])
def test_hits_and_facets_name_only_the_callers_projects(site: SecuredSite, user: str) -> None:
    found = _search(site, user, aggs=PROJECT_FACETS)
    assert _projects_by_series(found) == {uid: ["liver"] for uid in site.series}
    assert found["aggregations"]["projects"]["buckets"] == [
        {"key": "liver", "doc_count": len(site.series)}]
    assert found["aggregations"]["projects"]["sum_other_doc_count"] == 0
    assert found["aggregations"]["how_many"] == {"value": 1}
    facets = site.client.post("/api/meta/aggregate", json={"aggs": PROJECT_FACETS},
                              headers=site.tokens[user]).json()["aggregations"]
    assert facets == found["aggregations"]
    values = site.client.get("/api/meta/fields/Projects/values", headers=site.tokens[user])
    assert values.json()["values"] == [{"key": "liver", "doc_count": len(site.series)}]


def test_a_researcher_of_another_project_sees_only_that_one(site: SecuredSite) -> None:
    found = _search(site, "bob", fields=["Projects"], aggs=PROJECT_FACETS)
    assert _projects_by_series(found) == {uid: ["lung"] for uid in site.shared}
    assert [b["key"] for b in found["aggregations"]["projects"]["buckets"]] == ["lung"]


@pytest.mark.parametrize("query", [
    {"term": {"Projects": "trial-x"}},
    {"terms": {"Projects": ["lung", "trial-x"]}},
    {"wildcard": {"Projects": "tri*"}},
    {"prefix": {"Projects": "lu"}},
    {"range": {"Projects": {"gte": "lung"}}},
])
def test_asking_about_another_project_finds_nothing(site: SecuredSite,
                                                    query: dict[str, Any]) -> None:
    # before: the series of liver that also belong to lung and trial-x
    assert _search(site, "alice", query=query)["total"] == 0
    assert _search(site, "root", query=query)["total"] == len(site.shared)


def test_clauses_on_the_callers_own_projects_still_match(site: SecuredSite) -> None:
    for query in ({"term": {"Projects": "liver"}}, {"wildcard": {"Projects": "l*"}},
                  {"range": {"Projects": {"lt": "lung"}}}, {"exists": {"field": "Projects"}}):
        assert _search(site, "alice", query=query)["total"] == len(site.series), query
    excluded = {"bool": {"must_not": [{"term": {"Projects": "trial-x"}}]}}
    assert _search(site, "alice", query=excluded)["total"] == len(site.series)
    assert _search(site, "root", query=excluded)["total"] == len(site.series) - len(site.shared)


def test_site_admins_see_every_project(site: SecuredSite) -> None:
    found = _search(site, "root", aggs=PROJECT_FACETS)
    shared = set(site.shared)
    assert _projects_by_series(found) == {
        uid: ["liver", "lung", "trial-x"] if uid in shared else ["liver"] for uid in site.series}
    assert {b["key"]: b["doc_count"] for b in found["aggregations"]["projects"]["buckets"]} == {
        "liver": len(site.series), "lung": len(shared), "trial-x": len(shared)}
    assert found["aggregations"]["how_many"] == {"value": 3}


@pytest.mark.parametrize("freeze", [False, True])
def test_cohort_pages_name_only_the_callers_projects(site: SecuredSite, freeze: bool) -> None:
    created = site.client.post("/api/meta/cohorts", headers=site.tokens["alice"], json={
        "name": f"all {freeze}", "query": {"match_all": {}}, "freeze": freeze})
    assert created.status_code == 201, created.text
    path = f"/api/meta/cohorts/{created.json()['id']}/series"
    for user in ("alice", "vic"):
        page = site.client.get(path, params={"limit": 100}, headers=site.tokens[user]).json()
        assert {h[ID_FIELD]: h["Projects"] for h in page["hits"]} == {
            uid: ["liver"] for uid in site.series}
    admin = site.client.get(path, params={"limit": 100}, headers=site.tokens["root"]).json()
    assert {len(h["Projects"]) for h in admin["hits"]} == {1, 3}


def test_a_cohort_query_asks_about_its_own_project_only(site: SecuredSite) -> None:
    created = site.client.post("/api/meta/cohorts", headers=site.tokens["alice"], json={
        "name": "probe", "query": {"term": {"Projects": "lung"}}, "freeze": True})
    assert created.json()["frozen_series"] == 0  # before: the series shared with lung
