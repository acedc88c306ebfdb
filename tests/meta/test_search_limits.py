"""Bounded work in the cohort language: every search is bounded when it is parsed (the
``meta`` settings name each limit), and a search the index engine itself refuses is a
400 naming the reason, never a 500 (issue #12: a 60 KB wildcard pattern or 2,100
aggregations answered 500)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opensearchpy.exceptions import RequestError
from tests.meta.secured import SecuredSite, secured_site
from tests.meta.test_index_opensearch import FakeClient

from jip.config import MetaSettings
from jip.errors import Invalid
from jip.meta.aggs import parse_aggs, parse_sort
from jip.meta.index_opensearch import OpenSearchIndex
from jip.meta.index_sqlite import SqliteIndex
from jip.meta.limits import DEFAULT_LIMITS, QueryLimits
from jip.meta.query import parse_query

CT = {"term": {"Modality": "CT"}}


def _terms(n: int, field: str = "Modality") -> list[dict[str, Any]]:
    return [{"term": {field: f"V{i}"}} for i in range(n)]


def _deep(levels: int, width: int) -> dict[str, Any]:
    """``levels`` nested bools, each with ``width`` should clauses, two of them needed."""
    query: dict[str, Any] = {"term": {"ImageType": "AXIAL"}}
    for _ in range(levels):
        query = {"bool": {"should": [query, *_terms(width - 1, "ImageType")],
                          "minimum_should_match": 2}}
    return query


@pytest.fixture(scope="module")
def index() -> Iterator[SqliteIndex]:
    index = SqliteIndex(":memory:")
    index.upsert([{"SeriesInstanceUID": f"1.2.{i}", "Modality": "CT" if i % 2 else "MR",
                   "ImageType": ["ORIGINAL", "AXIAL"], "SliceThickness": float(i)}
                  for i in range(20)])
    yield index
    index.close()


# -- the limits, checked while parsing -------------------------------------------------


@pytest.mark.parametrize(("query", "message"), [
    ({"wildcard": {"Modality": "*a" * 30000}},
     r"query\.wildcard\.Modality: a pattern may be at most 256 characters, got 60000 "
     r"\(setting meta\.max_pattern_length\)"),
    ({"prefix": {"Modality": "C" * 257}}, r"at most 256 characters.*max_pattern_length"),
    ({"term": {"Modality": "C" * 1025}}, r"query\.term\.Modality: a value may be at most "
                                         r"1024 characters.*max_value_length"),
    ({"terms": {"Modality": ["CT", "C" * 2000]}}, r"Modality\[1\]: a value.*max_value_length"),
    ({"range": {"StudyDate": {"gte": "2" * 2000}}}, r"StudyDate\.gte: a value"),
    ({"match": {"SeriesDescription": "axial " * 200}}, r"\.query: a value.*max_value_length"),
    # clauses count over every bool level, not per bool (two of 600 passed before)
    ({"bool": {"must": [{"bool": {"should": _terms(600)}}, {"bool": {"should": _terms(600)}}]}},
     r"at most 1024 clauses in one query \(setting meta\.max_query_clauses\)"),
    # values count over the whole query (two lists of 40,000 passed before)
    ({"bool": {"should": [{"terms": {"Modality": [str(i) for i in range(40000)]}},
                          {"terms": {"BodyPartExamined": [str(i) for i in range(40000)]}}]}},
     r"at most 65536 values in one query \(setting meta\.max_query_terms\)"),
    ({"term": {"SeriesNumber": 1e30}}, r"expected an integer value for 'SeriesNumber'"),
])
def test_a_query_beyond_a_limit_is_refused_naming_the_setting(query: Any, message: str) -> None:
    with pytest.raises(Invalid, match=message):
        parse_query(query)


def test_aggregations_beyond_the_limit_are_refused_naming_the_setting() -> None:
    aggs = {f"a{i}": {"terms": {"field": "Modality"}} for i in range(2100)}
    with pytest.raises(Invalid, match=r"at most 100 aggregations in one request, got 2100 "
                                      r"\(setting meta\.max_aggregations\)"):
        parse_aggs(aggs)
    assert len(parse_aggs(dict(list(aggs.items())[:100]))) == 100


def test_limits_follow_the_meta_settings() -> None:
    limits = QueryLimits.of(MetaSettings(max_query_clauses=2, max_pattern_length=3,
                                         max_aggregations=1, max_query_terms=5,
                                         max_value_length=4))
    assert QueryLimits.of(MetaSettings()) == DEFAULT_LIMITS
    with pytest.raises(Invalid, match="at most 2 clauses"):
        parse_query({"bool": {"filter": _terms(3)}}, limits=limits)
    with pytest.raises(Invalid, match="at most 3 characters"):
        parse_query({"wildcard": {"Modality": "C*CT"}}, limits=limits)
    with pytest.raises(Invalid, match="at most 5 values"):
        parse_query({"terms": {"Modality": list("ABCDEF")}}, limits=limits)
    with pytest.raises(Invalid, match="at most 4 characters"):
        parse_query({"term": {"Modality": "SEG12"}}, limits=limits)
    with pytest.raises(Invalid, match="at most 1 aggregations"):
        parse_aggs({"a": {"terms": {"field": "Modality"}},
                    "b": {"terms": {"field": "Modality"}}}, limits=limits)


# -- what the limits allow, the engines run ------------------------------------------------


@pytest.mark.parametrize("query", [
    {"bool": {"should": [*_terms(1023), CT]}},
    {"bool": {"should": [*_terms(1023), CT], "minimum_should_match": 2}},
    {"bool": {"must": [CT, *[{"exists": {"field": "Modality"}}] * 1023]}},
    {"bool": {"must_not": _terms(1024, "ImageType")}},
    _deep(20, 2),
    _deep(10, 50),
], ids=["should", "should-2", "must", "must_not-multi", "deep-narrow", "deep-wide"])
def test_the_largest_queries_the_limits_allow_run_on_sqlite(index: SqliteIndex,
                                                           query: dict[str, Any]) -> None:
    # SQLite refused each with "Expression tree is too large (maximum depth 1000)"
    result = index.search(parse_query(query), limit=0)
    assert 0 <= result.total <= 20


def test_a_field_sorted_on_again_and_again_is_one_sort_key(index: SqliteIndex) -> None:
    sort = parse_sort(["Modality"] * 5000)  # "too many terms in ORDER BY clause" before
    assert [k.field.name for k in sort] == ["Modality", "SeriesInstanceUID"]
    assert len(index.search(sort=sort, limit=5).hits) == 5


def test_a_range_bound_beyond_64_bits_compares_as_a_number(index: SqliteIndex) -> None:
    query = parse_query({"range": {"SeriesNumber": {"lt": 1e30}}})
    assert index.search(query, limit=0).total == 0  # no series has a SeriesNumber


@pytest.mark.parametrize(("query", "aggs", "reason"), [
    ({"wildcard": {"Modality": "*a" * 30000}}, None, "LIKE or GLOB pattern too complex"),
    (None, {f"a{i}": {"terms": {"field": "Modality"}} for i in range(2100)},
     "too many columns in result set"),
])
def test_a_search_sqlite_refuses_is_invalid_naming_why(
    index: SqliteIndex, query: Any, aggs: Any, reason: str
) -> None:
    generous = QueryLimits(max_clauses=10**6, max_terms=10**6, max_pattern_length=10**6,
                           max_value_length=10**6, max_aggregations=10**4)
    parsed = parse_query(query, limits=generous)
    with pytest.raises(Invalid, match=f"refused this search as too complex \\({reason}\\)"):
        index.search(parsed, aggs=parse_aggs(aggs, limits=generous))


def test_a_search_opensearch_refuses_is_invalid_naming_its_reason() -> None:
    refused = RequestError(400, "search_phase_execution_exception", {"error": {
        "root_cause": [{"type": "too_many_clauses", "reason": "maxClauseCount is set to 1024"}],
        "type": "search_phase_execution_exception"}})
    index = OpenSearchIndex(client=FakeClient(search=refused), index="jip-series")
    with pytest.raises(Invalid, match=r"OpenSearch refused this search "
                                      r"\(maxClauseCount is set to 1024\)"):
        index.search(parse_query(CT))
    with pytest.raises(Invalid, match="maxClauseCount"):
        index.aggregate(parse_query(CT), parse_aggs({"m": {"terms": {"field": "Modality"}}}))


# -- over HTTP, as a researcher -------------------------------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredSite]:
    with secured_site(tmp_path_factory.mktemp("limits"), series=4) as site:
        yield site


@pytest.mark.parametrize(("path", "body", "setting"), [
    ("/api/meta/search", {"query": {"wildcard": {"Modality": "*a" * 30000}}},
     "meta.max_pattern_length"),
    ("/api/meta/aggregate",
     {"aggs": {f"a{i}": {"terms": {"field": "Modality"}} for i in range(2100)}},
     "meta.max_aggregations"),
    ("/api/meta/search",
     {"query": {"bool": {"should": [{"bool": {"should": _terms(1000)}}] * 2}}},
     "meta.max_query_clauses"),
    ("/api/meta/cohorts",
     {"name": "huge", "query": {"prefix": {"Modality": "C" * 60000}}},
     "meta.max_pattern_length"),
])
def test_searches_beyond_a_limit_are_400_naming_the_setting(
    site: SecuredSite, path: str, body: dict[str, Any], setting: str
) -> None:
    response = site.client.post(path, json=body, headers=site.tokens["alice"])
    assert response.status_code == 400, response.text
    assert setting in response.json()["detail"]


def test_the_largest_search_the_limits_allow_answers(site: SecuredSite) -> None:
    body = {"query": {"bool": {"should": [*_terms(1023), CT], "minimum_should_match": 1}},
            "sort": ["Modality"] * 5000,
            "aggs": {f"a{i}": {"terms": {"field": "Modality"}} for i in range(100)}}
    response = site.client.post("/api/meta/search", json=body, headers=site.tokens["vic"])
    assert response.status_code == 200, response.text
    assert len(response.json()["aggregations"]) == 100


def test_a_site_sets_its_own_limits(tmp_path: Path) -> None:
    with secured_site(tmp_path, series=1, max_aggregations=2, max_pattern_length=10000) as site:
        alice = site.tokens["alice"]
        aggs = {name: {"terms": {"field": "Modality"}} for name in "abc"}
        response = site.client.post("/api/meta/aggregate", json={"aggs": aggs}, headers=alice)
        assert response.status_code == 400
        assert "at most 2 aggregations" in response.json()["detail"]
        # the longest pattern the setting allows stays within SQLite's 50,000-byte limit
        query = {"wildcard": {"Modality": "[*\U0010ffff" * 3333}}
        response = site.client.post("/api/meta/search", json={"query": query}, headers=alice)
        assert response.status_code == 200, response.text
