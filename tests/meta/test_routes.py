"""``/api/meta`` with auth enabled: search, facets, fields, cohorts per project, errors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.base.support import SITE, add_user, auth_for
from tests.meta import reference
from tests.meta.test_indexer import indexer_of, ingest, plan_series

from jip.app import build_app
from jip.base import users as users_module
from jip.base.schema import ProjectRole
from jip.config import Settings
from jip.meta.fields import ID_FIELD
from jip.runtime import Runtime, build_runtime
from jip.store import SeriesProjects

CT_THIN = {"bool": {"filter": [{"term": {"Modality": "CT"}},
                               {"range": {"SliceThickness": {"lte": 3}}}]}}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Runtime, list[dict]]]:
    cost = users_module.DEFAULT_COST
    users_module.DEFAULT_COST = users_module.ScryptCost(n=2**10, r=8, p=1)
    users_module._dummy_hash.cache_clear()
    root = tmp_path_factory.mktemp("routes")
    runtime = build_runtime(Settings(data_dir=root / "data", auth={"public_url": SITE}))
    add_user(runtime, "root", admin=True)
    add_user(runtime, "alice", projects={"liver": ProjectRole.RESEARCHER})
    add_user(runtime, "bob", projects={"lung": ProjectRole.RESEARCHER})
    add_user(runtime, "vic", projects={"liver": ProjectRole.VIEWER})
    # Every series is in `liver` (series search is limited to the caller's projects).
    SeriesProjects(runtime.engine).add_rule("liver", field="Modality", pattern="*")
    planned = plan_series(60, seed=31)
    ingest(runtime, planned, root / "spool")
    broken = runtime.catalog.instances_of_series(planned[0].expected[ID_FIELD])[0]
    path = runtime.storage.local_path(broken.blob_key)
    assert path is not None
    path.write_bytes(b"\0" * 100)  # a stored file gone bad: its header cannot be parsed
    indexer_of(runtime).drain()
    expected = [p.expected for p in planned]
    if len(planned[0].datasets) == 1:
        expected = expected[1:]
    else:
        expected[0] = expected[0] | {"NumberOfInstances": len(planned[0].datasets) - 1}
    yield runtime, expected
    runtime.close()
    users_module.DEFAULT_COST = cost
    users_module._dummy_hash.cache_clear()


@pytest.fixture(scope="module")
def client(site: tuple[Runtime, list[dict]]) -> TestClient:
    return TestClient(build_app(site[0]))


@pytest.fixture(scope="module")
def tokens(client: TestClient) -> dict[str, dict[str, str]]:
    return {name: auth_for(client, name) for name in ("root", "alice", "bob", "vic")}


def uids(docs: list[dict[str, Any]]) -> set[str]:
    return {d[ID_FIELD] for d in docs}


def test_meta_routes_need_a_token(client: TestClient) -> None:
    for method, path in [("POST", "/api/meta/search"), ("GET", "/api/meta/fields"),
                         ("GET", "/api/meta/cohorts"), ("GET", "/api/meta/errors"),
                         ("POST", "/api/meta/reindex")]:
        assert client.request(method, path).status_code == 401, path


def test_search_answers_hits_total_and_facets(client: TestClient, tokens: Any,
                                              site: Any) -> None:
    expected = site[1]
    body = {"query": CT_THIN, "sort": [{"StudyDate": "desc"}], "limit": 5,
            "fields": ["Modality", "StudyDate"],
            "aggs": {"by_maker": {"terms": {"field": "Manufacturer"}}}}
    response = client.post("/api/meta/search", json=body, headers=tokens["alice"])
    assert response.status_code == 200, response.text
    found = response.json()
    matching = reference.search(expected, CT_THIN)
    assert found["total"] == len(matching)
    assert [h[ID_FIELD] for h in found["hits"]] == reference.sort(matching, "StudyDate", True)[:5]
    assert set(found["hits"][0]) == {ID_FIELD, "Modality", "StudyDate"}
    assert found["aggregations"]["by_maker"] == reference.terms(matching, "Manufacturer")

    facets = client.post("/api/meta/aggregate", headers=tokens["alice"], json={
        "query": CT_THIN, "aggs": {"ages": {"range": {"field": "PatientAgeYears",
                                                      "ranges": [{"to": 50}, {"from": 50}]}}}})
    assert facets.json()["aggregations"]["ages"] == reference.ranges(
        matching, "PatientAgeYears", [{"to": 50}, {"from": 50}])


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"query": {"range": {"SliceThickness": {"lte": "thin"}}}},
         "query.range.SliceThickness.lte: expected a float value"),
        ({"query": {"term": {"Scanner": "x"}}}, "unknown field 'Scanner'"),
        ({"query": {"fuzzy": {"Modality": "CT"}}}, "unknown query clause 'fuzzy'"),
        ({"aggs": {"m": {"avg": {"field": "SliceThickness"}}}}, "unknown aggregation 'avg'"),
        ({"sort": [{"ImageType": "asc"}]}, "multi-valued field 'ImageType'"),
        ({"fields": ["Nope"]}, "fields: unknown field 'Nope'"),
        ({"limit": -1}, "limit:"),
        ({"offset": 9990, "limit": 20}, "offset + limit"),
        ({"querry": {}}, "querry:"),
    ],
)
def test_bad_search_is_400_naming_the_field_or_clause(
    client: TestClient, tokens: Any, body: dict[str, Any], message: str
) -> None:
    response = client.post("/api/meta/search", json=body, headers=tokens["alice"])
    assert response.status_code == 400, response.text
    assert message in response.json()["detail"]


def test_a_body_that_is_not_json_is_400(client: TestClient, tokens: Any) -> None:
    response = client.post("/api/meta/search", content=b"{not json",
                           headers={**tokens["alice"], "Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["detail"].startswith("body: not valid JSON")


def test_field_catalogue_lists_types_and_top_values(client: TestClient, tokens: Any,
                                                    site: Any) -> None:
    fields = {f["name"]: f for f in client.get("/api/meta/fields",
                                               headers=tokens["bob"]).json()}
    assert fields["SliceThickness"]["type"] == "float"
    assert fields["ImageType"]["multi"] and not fields["ImageType"]["sortable"]
    assert fields["SeriesDescription"]["keyword"] == "SeriesDescription.keyword"
    values = client.get("/api/meta/fields/Manufacturer/values", params={"size": 2},
                        headers=tokens["alice"]).json()
    assert values["values"] == reference.terms(site[1], "Manufacturer", 2)["buckets"]
    # bob's project holds no series: values come from the caller's projects only
    assert client.get("/api/meta/fields/Manufacturer/values",
                      headers=tokens["bob"]).json()["values"] == []
    described = client.get("/api/meta/fields/SeriesDescription/values",
                           headers=tokens["alice"]).json()["values"]
    assert sum(v["doc_count"] for v in described) == len(site[1])
    unknown = client.get("/api/meta/fields/Nope/values", headers=tokens["bob"])
    assert unknown.status_code == 400 and "Nope" in unknown.json()["detail"]


def test_cohorts_are_limited_to_the_callers_projects(client: TestClient,
                                                     tokens: Any) -> None:
    created = client.post("/api/meta/cohorts", headers=tokens["alice"],
                          json={"name": "CT thin", "query": CT_THIN})
    assert created.status_code == 201, created.text
    cohort = created.json()
    assert (cohort["project"], cohort["created_by"], cohort["frozen"]) == ("liver", "alice",
                                                                           False)
    path = f"/api/meta/cohorts/{cohort['id']}"
    assert client.get(path, headers=tokens["bob"]).status_code == 404
    assert client.get(f"{path}/series", headers=tokens["bob"]).status_code == 404
    assert client.get(f"{path}/export", headers=tokens["bob"]).status_code == 404
    assert client.delete(path, headers=tokens["bob"]).status_code == 404
    assert cohort["id"] not in {c["id"] for c in client.get(
        "/api/meta/cohorts", headers=tokens["bob"]).json()}
    assert client.get(path, headers=tokens["vic"]).status_code == 200
    assert client.patch(path, json={"name": "mine"}, headers=tokens["vic"]).status_code == 403
    assert client.get(path, headers=tokens["root"]).status_code == 200
    elsewhere = client.post("/api/meta/cohorts", headers=tokens["alice"],
                            json={"name": "x", "query": CT_THIN, "project": "lung"})
    assert elsewhere.status_code == 404

    patched = client.patch(path, json={"description": "thin slices"}, headers=tokens["alice"])
    assert patched.json()["description"] == "thin slices"
    assert client.delete(path, headers=tokens["alice"]).status_code == 204
    assert client.get(path, headers=tokens["alice"]).status_code == 404


def test_cohort_series_freeze_export_and_import(client: TestClient, tokens: Any,
                                                site: Any) -> None:
    alice = tokens["alice"]
    cohort = client.post("/api/meta/cohorts", headers=alice, json={
        "name": "frozen CT", "query": CT_THIN, "freeze": True}).json()
    wanted = sorted(uids(reference.search(site[1], CT_THIN)))
    assert cohort["frozen"] and cohort["frozen_series"] == len(wanted)
    page = client.get(f"/api/meta/cohorts/{cohort['id']}/series", headers=alice,
                      params={"limit": 3, "fields": "Modality,SliceThickness"}).json()
    assert page["frozen"] and page["total"] == len(wanted)
    assert [h[ID_FIELD] for h in page["hits"]] == wanted[:3]
    assert set(page["hits"][0]) == {ID_FIELD, "Modality", "SliceThickness"}

    exported = client.get(f"/api/meta/cohorts/{cohort['id']}/export", headers=alice)
    assert exported.headers["content-disposition"] == 'attachment; filename="frozen-CT.json"'
    document = exported.json()
    assert "series" not in document and document["source_site"] == SITE
    imported = client.post("/api/meta/cohorts/import", json=document, headers=tokens["bob"])
    assert imported.status_code == 201, imported.text
    assert imported.json()["project"] == "lung" and not imported.json()["frozen"]
    again = client.post("/api/meta/cohorts/import", json=document, headers=tokens["bob"])
    assert again.status_code == 409
    bad = client.post("/api/meta/cohorts/import", headers=tokens["bob"], params={"name": "b"},
                      json=document | {"query": {"bool": {"must": [{"term": {"Age": 3}}]}}})
    assert bad.status_code == 400
    assert bad.json()["detail"] == "query.bool.must[0].term: unknown field 'Age'"
    unfrozen = client.post(f"/api/meta/cohorts/{cohort['id']}/unfreeze", headers=alice)
    assert unfrozen.json()["frozen"] is False


def test_header_errors_and_index_status_are_visible(client: TestClient, tokens: Any,
                                                    site: Any) -> None:
    runtime = site[0]
    errors = client.get("/api/meta/errors", headers=tokens["alice"]).json()
    assert errors["total"] == 1
    assert "not a DICOM instance" in errors["errors"][0]["error"]
    status = client.get("/api/meta/status", headers=tokens["alice"]).json()
    assert status == {"pending": 0, "failed": 1, "documents": runtime.index.count()}
    # bob's project holds no series: errors and counts name the caller's projects only
    assert client.get("/api/meta/errors", headers=tokens["bob"]).json() == {
        "total": 0, "errors": []}
    status = client.get("/api/meta/status", headers=tokens["bob"]).json()
    assert status == {"pending": 0, "failed": 0, "documents": 0}


def test_reindex_is_for_site_admins_and_requeues_every_instance(
    client: TestClient, tokens: Any, site: Any
) -> None:
    runtime = site[0]
    assert client.post("/api/meta/reindex", headers=tokens["alice"]).status_code == 403
    instances = runtime.catalog.counts()["instances"]
    response = client.post("/api/meta/reindex", headers=tokens["root"])
    assert response.json() == {"queued": instances, "removed": 0}
    status = client.get("/api/meta/status", headers=tokens["root"]).json()
    assert (status["pending"], status["failed"]) == (instances, 0)
    indexer_of(runtime).drain()
    status = client.get("/api/meta/status", headers=tokens["root"]).json()
    assert (status["pending"], status["failed"]) == (0, 1)
