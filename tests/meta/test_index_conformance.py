"""The contract every MetaIndex adapter keeps: OpenSearch's answers, by the reference."""

from __future__ import annotations

from typing import Any

import pytest
from tests.meta import reference

from jip.errors import Invalid
from jip.meta.aggs import parse_aggs, parse_sort
from jip.meta.index import MetaIndex
from jip.meta.query import MATCH_ALL, parse_query

RESEARCHER_QUERY = {
    "bool": {
        "filter": [
            {"term": {"Modality": "CT"}},
            {"term": {"BodyPartExamined": "ABDOMEN"}},
            {"range": {"SliceThickness": {"lte": 3}}},
            {"range": {"PatientAgeYears": {"gte": 50, "lte": 70}}},
        ]
    }
}

QUERIES: dict[str, dict[str, Any]] = {
    "match_all": {"match_all": {}},
    "empty_object_is_everything": {},
    "term_keyword": {"term": {"Modality": "CT"}},
    "term_keyword_is_case_sensitive": {"term": {"Manufacturer": "Philips"}},
    "term_keyword_other_case": {"term": {"Manufacturer": "PHILIPS"}},
    "term_keyword_lowercase_finds_nothing": {"term": {"Manufacturer": "philips"}},
    "term_long_form": {"term": {"BodyPartExamined": {"value": "HEAD"}}},
    "term_boolean": {"term": {"Contrast": True}},
    "term_boolean_false": {"term": {"Contrast": False}},
    "term_date_basic": {"term": {"StudyDate": "20040119"}},
    "term_date_iso": {"term": {"StudyDate": "2004-01-19"}},
    "term_integer": {"term": {"SeriesNumber": 2}},
    "term_float": {"term": {"SliceThickness": 2.5}},
    "term_multi_any_value": {"term": {"ImageType": "LOCALIZER"}},
    "term_segment_label": {"term": {"SegmentLabels": "Liver"}},
    "term_text_keyword_twin": {"term": {"SeriesDescription.keyword": "T2 FLAIR"}},
    "terms_keyword": {"terms": {"Modality": ["PT", "SEG"]}},
    "terms_body_parts": {"terms": {"BodyPartExamined": ["ABDOMEN", "PELVIS", "LIVER"]}},
    "terms_multi": {"terms": {"ScanningSequence": ["IR", "EP"]}},
    "terms_float_multi": {"terms": {"PixelSpacing": [0.5, 4.0]}},
    "terms_integer": {"terms": {"SeriesNumber": [1, 3]}},
    "range_lte": {"range": {"SliceThickness": {"lte": 3}}},
    "range_exclusive": {"range": {"SliceThickness": {"gt": 1, "lt": 3}}},
    "range_inclusive": {"range": {"SliceThickness": {"gte": 1, "lte": 3}}},
    "range_dates_mixed_formats": {"range": {"StudyDate": {"gte": "20150101", "lt": "2016-01-01"}}},
    "range_age": {"range": {"PatientAgeYears": {"gte": 50, "lte": 70}}},
    "range_infant_age": {"range": {"PatientAgeYears": {"lt": 1}}},
    "range_integer_float_bound": {"range": {"SeriesNumber": {"gt": 1.5}}},
    "range_keyword": {"range": {"PatientID": {"gte": "P00010", "lt": "P00020"}}},
    "range_multi_any_value": {"range": {"PixelSpacing": {"gte": 0.9, "lte": 1}}},
    "range_long": {"range": {"TotalBytes": {"gt": 2**31}}},
    "range_json_field": {"range": {"EchoTime": {"gte": 30}}},
    "exists_keyword": {"exists": {"field": "BodyPartExamined"}},
    "exists_multi": {"exists": {"field": "SegmentLabels"}},
    "exists_float": {"exists": {"field": "PatientAgeYears"}},
    "exists_json_field": {"exists": {"field": "Radiopharmaceutical"}},
    "wildcard_inner": {"wildcard": {"Manufacturer": "*MEDICAL*"}},
    "wildcard_one_char": {"wildcard": {"Manufacturer": {"value": "Phil?ps"}}},
    "wildcard_keyword_twin": {"wildcard": {"SeriesDescription.keyword": "T2*"}},
    "wildcard_multi": {"wildcard": {"SegmentLabels": "*er"}},
    "prefix_keyword": {"prefix": {"Manufacturer": "SIEM"}},
    "prefix_model": {"prefix": {"ManufacturerModelName": {"value": "Dis"}}},
    "prefix_multi": {"prefix": {"ReferencedSeriesInstanceUID": "2.25.1"}},
    "prefix_json_field": {"prefix": {"Radiopharmaceutical": "Fluoro"}},
    "match_one_word": {"match": {"SeriesDescription": "flair"}},
    "match_or_default": {"match": {"SeriesDescription": "T1 post"}},
    "match_and": {"match": {"SeriesDescription": {"query": "T1 post", "operator": "and"}}},
    "match_upper_case_query": {"match": {"StudyDescription": "CONTRAST"}},
    "match_slash_splits": {"match": {"StudyDescription": {"query": "W/O", "operator": "and"}}},
    "match_decimal_token": {"match": {"SeriesDescription": "2.5mm"}},
    "match_umlaut": {"match": {"StudyDescription": "übersicht"}},
    "match_hyphen": {"match": {"StudyDescription": {"query": "pet-ct", "operator": "and"}}},
    "match_underscore_joins": {"match": {"SeriesDescription": "t1_mprage_sag"}},
    "match_no_tokens": {"match": {"SeriesDescription": "--"}},
    "bool_must_and_must_not": {"bool": {
        "must": [{"term": {"Modality": "MR"}}],
        "must_not": [{"term": {"MagneticFieldStrength": 1.5}}],
    }},
    "bool_must_not_includes_missing": {"bool": {
        "must_not": {"term": {"BodyPartExamined": "HEAD"}},
    }},
    "bool_should_only": {"bool": {"should": [
        {"term": {"Modality": "PT"}}, {"term": {"BodyPartExamined": "NECK"}},
    ]}},
    "bool_should_minimum_two": {"bool": {"minimum_should_match": 2, "should": [
        {"term": {"Modality": "CT"}}, {"term": {"Contrast": True}},
        {"range": {"SliceThickness": {"lt": 2}}},
    ]}},
    "bool_filter_makes_should_optional": {"bool": {
        "filter": [{"term": {"Modality": "PT"}}],
        "should": [{"term": {"BodyPartExamined": "HEAD"}}],
    }},
    "bool_nested": {"bool": {"must": [
        {"bool": {"should": [{"match": {"SeriesDescription": "venous"}},
                             {"match": {"SeriesDescription": "arterial"}}]}},
        {"bool": {"must_not": [{"range": {"PatientAgeYears": {"lt": 40}}}]}},
    ]}},
    "bool_must_not_range_on_missing": {"bool": {
        "must_not": [{"range": {"SliceThickness": {"lte": 3}}}],
    }},
    "researcher_question": RESEARCHER_QUERY,
}


def _uids(docs: list[dict[str, Any]]) -> set[str]:
    return {d["SeriesInstanceUID"] for d in docs}


@pytest.mark.parametrize("name", list(QUERIES))
def test_search_finds_what_the_reference_finds(
    loaded_index: MetaIndex, corpus: list[dict[str, Any]], name: str
) -> None:
    query = QUERIES[name]
    expected = reference.search(corpus, query)
    result = loaded_index.search(parse_query(query), limit=1000, fields=["SeriesInstanceUID"])
    assert result.total == len(expected)
    assert _uids(result.hits) == _uids(expected)


def test_corpus_answers_the_interesting_queries(corpus: list[dict[str, Any]]) -> None:
    """The generated documents are varied enough that these queries find something."""
    for name in ("researcher_question", "term_text_keyword_twin", "match_and", "range_long",
                 "term_keyword_is_case_sensitive", "term_keyword_other_case", "match_umlaut",
                 "match_decimal_token", "bool_should_minimum_two", "term_date_basic",
                 "range_infant_age", "wildcard_one_char"):
        assert reference.search(corpus, QUERIES[name]), name


def test_researcher_cohort_by_manufacturer(
    loaded_index: MetaIndex, corpus: list[dict[str, Any]]
) -> None:
    """All CT abdomen series, slice thickness <= 3 mm, patients aged 50-70, by manufacturer."""
    aggs = {"by_manufacturer": {"terms": {"field": "Manufacturer"}}}
    cohort = reference.search(corpus, RESEARCHER_QUERY)
    result = loaded_index.aggregate(parse_query(RESEARCHER_QUERY), parse_aggs(aggs))
    assert result["by_manufacturer"] == reference.terms(cohort, "Manufacturer")
    assert sum(b["doc_count"] for b in result["by_manufacturer"]["buckets"]) == len(cohort)


AGG_QUERIES: dict[str, dict[str, Any]] = {
    "everything": {"match_all": {}},
    "ct": {"term": {"Modality": "CT"}},
    "researcher": RESEARCHER_QUERY,
    "nothing": {"term": {"Modality": "XA"}},
}
AGGS: dict[str, tuple[dict[str, Any], Any]] = {
    "terms_keyword": ({"terms": {"field": "Manufacturer"}},
                      lambda d: reference.terms(d, "Manufacturer")),
    "terms_small_size": ({"terms": {"field": "BodyPartExamined", "size": 2}},
                         lambda d: reference.terms(d, "BodyPartExamined", 2)),
    "terms_boolean": ({"terms": {"field": "Contrast"}}, lambda d: reference.terms(d, "Contrast")),
    "terms_multi": ({"terms": {"field": "ImageType", "size": 20}},
                    lambda d: reference.terms(d, "ImageType", 20)),
    "terms_float": ({"terms": {"field": "SliceThickness", "size": 20}},
                    lambda d: reference.terms(d, "SliceThickness", 20)),
    "terms_integer": ({"terms": {"field": "SeriesNumber"}},
                      lambda d: reference.terms(d, "SeriesNumber")),
    "terms_date": ({"terms": {"field": "StudyDate", "size": 5}},
                   lambda d: reference.terms(d, "StudyDate", 5)),
    "terms_keyword_twin": ({"terms": {"field": "SeriesDescription.keyword", "size": 50}},
                           lambda d: reference.terms(d, "SeriesDescription.keyword", 50)),
    "range_thickness": (
        {"range": {"field": "SliceThickness",
                   "ranges": [{"to": 1}, {"from": 1, "to": 3}, {"from": 3}]}},
        lambda d: reference.ranges(d, "SliceThickness", [{"to": 1}, {"from": 1, "to": 3},
                                                         {"from": 3}])),
    "range_keyed_ages": (
        {"range": {"field": "PatientAgeYears",
                   "ranges": [{"key": "child", "to": 18}, {"key": "50-70", "from": 50, "to": 71}]}},
        lambda d: reference.ranges(d, "PatientAgeYears", [{"key": "child", "to": 18},
                                                          {"key": "50-70", "from": 50, "to": 71}])),
    "range_multi": (
        {"range": {"field": "PixelSpacing", "ranges": [{"to": 0.6}, {"from": 0.6}]}},
        lambda d: reference.ranges(d, "PixelSpacing", [{"to": 0.6}, {"from": 0.6}])),
    "histogram_year": ({"date_histogram": {"field": "StudyDate", "calendar_interval": "year"}},
                       lambda d: reference.date_histogram(d, "StudyDate", "year")),
    "histogram_month": ({"date_histogram": {"field": "StudyDate", "calendar_interval": "month"}},
                        lambda d: reference.date_histogram(d, "StudyDate", "month")),
    "histogram_day": ({"date_histogram": {"field": "PatientBirthDate",
                                          "calendar_interval": "day"}},
                      lambda d: reference.date_histogram(d, "PatientBirthDate", "day")),
    "cardinality_patients": ({"cardinality": {"field": "PatientID"}},
                             lambda d: reference.cardinality(d, "PatientID")),
    "cardinality_multi": ({"cardinality": {"field": "ImageType"}},
                          lambda d: reference.cardinality(d, "ImageType")),
    "cardinality_float": ({"cardinality": {"field": "SliceThickness"}},
                          lambda d: reference.cardinality(d, "SliceThickness")),
}


@pytest.mark.parametrize("agg_name", list(AGGS))
@pytest.mark.parametrize("query_name", list(AGG_QUERIES))
def test_aggregation_counts_what_the_reference_counts(
    loaded_index: MetaIndex, corpus: list[dict[str, Any]], query_name: str, agg_name: str
) -> None:
    if agg_name == "histogram_day" and query_name == "everything":
        pytest.skip("a bucket per day over 95 years: covered on narrower queries")
    query, (agg, expected) = AGG_QUERIES[query_name], AGGS[agg_name]
    result = loaded_index.aggregate(parse_query(query), parse_aggs({agg_name: agg}))
    assert result[agg_name] == expected(reference.search(corpus, query))


def test_several_aggregations_in_one_call(loaded_index: MetaIndex, corpus: list[dict]) -> None:
    aggs = {name: AGGS[name][0] for name in ("terms_keyword", "histogram_year", "range_multi")}
    result = loaded_index.aggregate(parse_query({"term": {"Modality": "MR"}}), parse_aggs(aggs))
    matched = reference.search(corpus, {"term": {"Modality": "MR"}})
    assert result == {name: AGGS[name][1](matched) for name in aggs}


@pytest.mark.parametrize(("field", "descending"), [
    ("StudyDate", True), ("PatientAgeYears", False), ("Manufacturer", False),
    ("SeriesDescription.keyword", True), ("Contrast", False), ("SliceThickness", True),
])
def test_sort_orders_by_field_missing_last_ties_by_uid(
    loaded_index: MetaIndex, corpus: list[dict[str, Any]], field: str, descending: bool
) -> None:
    order = "desc" if descending else "asc"
    result = loaded_index.search(MATCH_ALL, sort=parse_sort([{field: {"order": order}}]),
                                 limit=1000, fields=["SeriesInstanceUID"])
    got = [h["SeriesInstanceUID"] for h in result.hits]
    assert got == reference.sort(corpus, field, descending)


def test_pages_are_stable_and_complete(loaded_index: MetaIndex, corpus: list[dict]) -> None:
    query = {"term": {"Modality": "CT"}}
    pages = [loaded_index.search(parse_query(query), sort=parse_sort("StudyDate"), offset=o,
                                 limit=50)
             for o in range(0, 300, 50)]
    uids = [h["SeriesInstanceUID"] for p in pages for h in p.hits]
    assert len(uids) == len(set(uids)) == pages[0].total == len(reference.search(corpus, query))


def test_fields_selects_what_each_hit_holds(loaded_index: MetaIndex) -> None:
    result = loaded_index.search(parse_query({"term": {"Modality": "MR"}}), limit=5,
                                 fields=["Modality", "MagneticFieldStrength"])
    assert result.hits
    for hit in result.hits:
        assert set(hit) <= {"SeriesInstanceUID", "Modality", "MagneticFieldStrength"}
        assert hit["Modality"] == "MR"


def test_full_hits_are_the_stored_documents(loaded_index: MetaIndex, corpus: list[dict]) -> None:
    ct = next(d for d in corpus if d.get("PatientID") == "1CT1")
    result = loaded_index.search(
        parse_query({"term": {"SeriesInstanceUID": ct["SeriesInstanceUID"]}})
    )
    assert result.hits == [ct]


def test_field_values_are_the_most_frequent(loaded_index: MetaIndex, corpus: list[dict]) -> None:
    assert loaded_index.field_values("Modality", 3) == reference.terms(corpus, "Modality", 3)[
        "buckets"
    ]


def test_bad_queries_are_refused_alike(loaded_index: MetaIndex) -> None:
    # Queries are parsed before any index sees them: one parser, one message.
    with pytest.raises(Invalid, match="unknown field 'Modalty'"):
        loaded_index.search(parse_query({"term": {"Modalty": "CT"}}))
    with pytest.raises(Invalid, match="unknown query clause 'fuzzy'"):
        loaded_index.aggregate(parse_query({"fuzzy": {"Modality": "CT"}}), {})
    with pytest.raises(Invalid, match="offset"):
        loaded_index.search(MATCH_ALL, offset=9990, limit=20)
    with pytest.raises(Invalid, match="fields: unknown field 'Modalty'"):
        loaded_index.search(MATCH_ALL, fields=["Modalty"])


# --- writes --------------------------------------------------------------------------


def test_upsert_replaces_a_document_everywhere(
    empty_index: MetaIndex, corpus: list[dict[str, Any]]
) -> None:
    docs = corpus[:20]
    assert empty_index.upsert(docs) == 20
    changed = dict(docs[0]) | {"Modality": "XA", "SeriesDescription": "zebra crossing",
                                "ImageType": ["UNIQUE"]}
    empty_index.upsert([changed])
    assert empty_index.count() == 20
    for query in ({"term": {"Modality": "XA"}}, {"match": {"SeriesDescription": "zebra"}},
                  {"term": {"ImageType": "UNIQUE"}}):
        assert empty_index.search(parse_query(query)).hits == [changed]
    old_words = reference.tokens(docs[0].get("SeriesDescription", "")) - {"zebra", "crossing"}
    for word in old_words:
        match = parse_query({"match": {"SeriesDescription": word}})
        hits = empty_index.search(match, limit=100).hits
        assert changed["SeriesInstanceUID"] not in _uids(hits)


def test_upsert_of_the_same_uid_twice_keeps_the_last(
    empty_index: MetaIndex, corpus: list[dict[str, Any]]
) -> None:
    first, second = dict(corpus[0]), dict(corpus[0]) | {"SeriesNumber": 99}
    assert empty_index.upsert([first, second]) == 1
    assert empty_index.search().hits == [second]


def test_delete_removes_documents_from_search_and_facets(
    empty_index: MetaIndex, corpus: list[dict[str, Any]]
) -> None:
    empty_index.upsert(corpus[:30])
    gone = [d["SeriesInstanceUID"] for d in corpus[:10]]
    assert empty_index.delete([*gone, "1.2.3.unknown"]) == 10
    assert empty_index.count() == 20
    assert empty_index.search(parse_query({"terms": {"SeriesInstanceUID": gone}})).total == 0
    facets = empty_index.aggregate(MATCH_ALL, parse_aggs({"m": {"terms": {"field": "Modality"}}}))
    assert facets["m"] == reference.terms(corpus[10:30], "Modality")


def test_clear_empties_the_index(empty_index: MetaIndex, corpus: list[dict[str, Any]]) -> None:
    empty_index.upsert(corpus[:5])
    empty_index.clear()
    assert empty_index.count() == 0
    assert empty_index.search().total == 0
    assert empty_index.field_values("Modality") == []


def test_documents_with_unknown_fields_are_refused(empty_index: MetaIndex) -> None:
    with pytest.raises(Invalid, match="unknown field 'Secret'"):
        empty_index.upsert([{"SeriesInstanceUID": "1.2.3", "Secret": "x"}])
    assert empty_index.count() == 0


@pytest.mark.parametrize("sort", [None, [{"StudyDate": "desc"}]])
@pytest.mark.parametrize("query_name", list(AGG_QUERIES))
def test_search_with_aggregations_answers_a_search_page_in_one_call(
    loaded_index: MetaIndex, corpus: list[dict[str, Any]], query_name: str, sort: object
) -> None:
    query = AGG_QUERIES[query_name]
    aggs = {name: AGGS[name][0] for name in ("terms_keyword", "histogram_year", "range_multi",
                                              "cardinality_patients")}
    matched = reference.search(corpus, query)
    result = loaded_index.search(
        parse_query(query), sort=parse_sort(sort), limit=5, aggs=parse_aggs(aggs)
    )
    assert result.total == len(matched)
    assert len(result.hits) == min(5, len(matched))
    assert _uids(result.hits) <= _uids(matched)
    assert result.aggregations == {name: AGGS[name][1](matched) for name in aggs}


def test_search_without_sort_pages_through_everything_once(
    loaded_index: MetaIndex, corpus: list[dict[str, Any]]
) -> None:
    query = {"term": {"Modality": "MR"}}
    total = loaded_index.search(parse_query(query), limit=0).total
    uids = [h["SeriesInstanceUID"] for offset in range(0, total, 7)
            for h in loaded_index.search(parse_query(query), offset=offset, limit=7).hits]
    assert sorted(uids) == sorted(_uids(reference.search(corpus, query)))
