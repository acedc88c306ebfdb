"""The cohort query language: what it accepts, how it reads it, what it refuses."""

from __future__ import annotations

from typing import Any

import pytest

from jip.errors import Invalid
from jip.meta.aggs import (
    CardinalityAgg,
    DateHistogramAgg,
    RangeAgg,
    RangeSpec,
    SortKey,
    TermsAgg,
    parse_aggs,
    parse_sort,
)
from jip.meta.fields import lookup
from jip.meta.query import (
    Bool,
    Match,
    MatchAll,
    Range,
    Term,
    Terms,
    parse_query,
)


def test_dates_are_read_in_both_formats() -> None:
    assert parse_query({"range": {"StudyDate": {"gte": "20200101", "lt": "2021-01-01"}}}) == (
        Range(lookup("StudyDate"), gte="2020-01-01", lt="2021-01-01")
    )


def test_short_and_long_forms_read_alike() -> None:
    assert parse_query({"term": {"Modality": "CT"}}) == parse_query(
        {"term": {"Modality": {"value": "CT", "boost": 2}}}
    )
    assert parse_query({"match": {"SeriesDescription": "T1 post"}}) == Match(
        lookup("SeriesDescription"), "T1 post", ("t1", "post"), "or"
    )


def test_terms_values_are_checked_and_deduplicated() -> None:
    assert parse_query({"terms": {"SeriesNumber": [1, 2, 1]}}) == Terms(
        lookup("SeriesNumber"), (1, 2)
    )


def test_deep_but_allowed_nesting_parses() -> None:
    assert isinstance(parse_query(_nested(20)), Bool)


def test_empty_queries_mean_everything() -> None:
    assert parse_query(None) == parse_query({}) == parse_query({"bool": {}}) == MatchAll()


@pytest.mark.parametrize(("body", "expected"), [
    ({"should": [{"match_all": {}}]}, 1),
    ({"should": [{"match_all": {}}], "minimum_should_match": 0}, 1),  # alone, one must match
    ({"filter": [{"match_all": {}}], "should": [{"match_all": {}}]}, 0),
    ({"should": [{"match_all": {}}] * 4, "minimum_should_match": "75%"}, 3),
    ({"should": [{"match_all": {}}] * 4, "minimum_should_match": -1}, 3),
    ({"should": [{"match_all": {}}] * 4, "minimum_should_match": "-25%"}, 3),
    ({"should": [{"match_all": {}}] * 2, "minimum_should_match": "2"}, 2),
])
def test_minimum_should_match_follows_opensearch(body: dict[str, Any], expected: int) -> None:
    tree = parse_query({"bool": body})
    assert isinstance(tree, Bool)
    assert tree.minimum_should_match == expected


def test_a_single_clause_may_stand_for_a_list() -> None:
    tree = parse_query({"bool": {"must": {"term": {"Modality": "CT"}}}})
    assert tree == Bool(must=(Term(lookup("Modality"), "CT"),))


def test_range_bound_on_an_integer_field_may_be_a_fraction() -> None:
    assert parse_query({"range": {"SeriesNumber": {"gt": 1.5, "lte": 4.0}}}) == Range(
        lookup("SeriesNumber"), gt=1.5, lte=4
    )


def test_aggregations_are_parsed() -> None:
    aggs = parse_aggs({
        "m": {"terms": {"field": "Manufacturer", "size": 5}},
        "t": {"range": {"field": "SliceThickness", "ranges": [{"to": 3}, {"key": "thick",
                                                                          "from": 3}]}},
        "y": {"date_histogram": {"field": "StudyDate", "calendar_interval": "1y"}},
        "p": {"cardinality": {"field": "PatientID"}},
    })
    assert aggs == {
        "m": TermsAgg(lookup("Manufacturer"), 5),
        "t": RangeAgg(lookup("SliceThickness"), (RangeSpec("*-3.0", None, 3.0),
                                                 RangeSpec("thick", 3.0, None))),
        "y": DateHistogramAgg(lookup("StudyDate"), "year"),
        "p": CardinalityAgg(lookup("PatientID")),
    }


def test_sort_forms_and_the_uid_tie_breaker() -> None:
    uid = SortKey(lookup("SeriesInstanceUID"))
    assert parse_sort(None) == parse_sort([]) == ()  # the index's own order
    assert parse_sort(["StudyDate", {"Manufacturer": "desc"}, {"Rows": {"order": "asc"}}]) == (
        SortKey(lookup("StudyDate")), SortKey(lookup("Manufacturer"), True),
        SortKey(lookup("Rows")), uid,
    )


REFUSED: list[tuple[object, str]] = [
    ({"term": {"Modalty": "CT"}}, r"query\.term: unknown field 'Modalty'"),
    ({"fuzzy": {"Modality": "CT"}}, r"query: unknown query clause 'fuzzy'"),
    ({"bool": {"must": [{"term": {"Modality": "CT"}}, {"regexp": {"Modality": "C.*"}}]}},
     r"query\.bool\.must\[1\]: unknown query clause 'regexp'"),
    ({"bool": {"shuold": []}}, r"query\.bool: unknown option 'shuold'"),
    ({"term": {"SeriesNumber": "two"}}, r"query\.term\.SeriesNumber: expected an integer"),
    ({"term": {"SeriesNumber": 2.5}}, r"expected an integer value for 'SeriesNumber'"),
    ({"term": {"Modality": 3}}, r"expected a keyword value for 'Modality', got 3"),
    ({"term": {"Contrast": "yes"}}, r"expected a boolean value"),
    ({"term": {"StudyDate": "2020/01/01"}}, r"expected a date \(yyyyMMdd or yyyy-MM-dd\)"),
    ({"term": {"StudyDate": "20201301"}}, r"expected a date"),
    ({"term": {"SeriesDescription": "T1"}}, r"'SeriesDescription' is a text field: use match"),
    ({"terms": {"Modality": "CT"}}, r"query\.terms\.Modality: expected a list"),
    ({"range": {"SliceThickness": {"lte": "3mm"}}},
     r"query\.range\.SliceThickness\.lte: expected a float value"),
    ({"range": {"SliceThickness": {"gtee": 3}}}, r"unknown option 'gtee'"),
    ({"range": {"SliceThickness": {}}}, r"give at least one of gt, gte, lt, lte"),
    ({"range": {"Contrast": {"gte": True}}}, r"range needs a number, date or keyword field"),
    ({"match": {"Modality": "CT"}}, r"match needs a text field; 'Modality' is keyword"),
    ({"match": {"SeriesDescription": {"query": "t1", "operator": "xor"}}}, r"operator"),
    ({"wildcard": {"SliceThickness": "3*"}}, r"needs a keyword field"),
    ({"prefix": {"Modality": 1}}, r"expected a string"),
    ({"exists": {"field": "Nope"}}, r"query\.exists\.field: unknown field 'Nope'"),
    ({"term": {"Modality": "CT"}, "range": {}}, r"exactly one key"),
    ("CT", r"exactly one key"),
    ({"bool": {"should": [{"match_all": {}}], "minimum_should_match": "most"}},
     r"minimum_should_match: expected an integer or a percentage"),
    ({"term": {"SeriesDescription.raw": "x"}}, r"unknown field 'SeriesDescription.raw'"),
    ({"term": {"Modality.keyword": "CT"}}, r"unknown field 'Modality.keyword'"),
]


def _nested(depth: int) -> dict[str, Any]:
    query: dict[str, Any] = {"match_all": {}}
    for _ in range(depth):
        query = {"bool": {"must": [query]}}
    return query


REFUSED += [
    (_nested(25), r"nest at most 20 deep"),
    ({"bool": {"should": [{"term": {"Modality": "CT"}}] * 1025}}, r"at most 1024 clauses"),
]


@pytest.mark.parametrize(("query", "message"), REFUSED)
def test_bad_queries_are_invalid_naming_the_fault(query: object, message: str) -> None:
    with pytest.raises(Invalid, match=message):
        parse_query(query)


AGGS_REFUSED: list[tuple[object, str]] = [
    ({"x": {"avg": {"field": "SliceThickness"}}}, r"aggs\.x: unknown aggregation 'avg'"),
    ({"x": {"terms": {"field": "Nope"}}}, r"unknown field 'Nope'"),
    ({"x": {"terms": {"field": "StudyDescription"}}}, r"text field: use match, or "
                                                      r"'StudyDescription\.keyword'"),
    ({"x": {"terms": {"field": "Modality", "size": 0}}}, r"size: expected an integer"),
    ({"x": {"terms": {"field": "Modality"}, "aggs": {}}}, r"exactly one key"),
    ({"x": {"terms": {"field": "Modality", "order": {"_key": "asc"}}}},
     r"unknown option 'order'"),
    ({"x": {"range": {"field": "Modality", "ranges": [{"to": 1}]}}},
     r"needs an integer or float field"),
    ({"x": {"range": {"field": "SliceThickness", "ranges": []}}}, r"expected a list of 1 to 60 ranges"),
    ({"x": {"range": {"field": "SliceThickness", "ranges": [{"to": "3"}]}}},
     r"ranges\[0\]\.to: expected a number"),
    ({"x": {"date_histogram": {"field": "StudyDate", "calendar_interval": "week"}}},
     r"calendar_interval: expected year, month or day"),
    ({"x": {"date_histogram": {"field": "SliceThickness", "calendar_interval": "year"}}},
     r"needs a date field"),
    ({"x": {"cardinality": {"field": "PatientID", "precision_threshold": 10}}},
     r"unknown option 'precision_threshold'"),
    ([{"terms": {"field": "Modality"}}], r"expected an object of named aggregations"),
]


@pytest.mark.parametrize(("aggs", "message"), AGGS_REFUSED)
def test_bad_aggregations_are_invalid_naming_the_fault(aggs: object, message: str) -> None:
    with pytest.raises(Invalid, match=message):
        parse_aggs(aggs)


@pytest.mark.parametrize(("sort", "message"), [
    ({"Nope": "asc"}, r"sort\[0\]: unknown field 'Nope'"),
    ({"ImageType": "asc"}, r"multi-valued"),
    ({"StudyDate": "up"}, r"order must be 'asc' or 'desc'"),
    ("SeriesDescription", r"text field"),
])
def test_bad_sorts_are_invalid(sort: object, message: str) -> None:
    with pytest.raises(Invalid, match=message):
        parse_sort(sort)
