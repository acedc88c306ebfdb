"""The OpenSearch index at the request level, with a fake client (no server here).

The same adapter runs the conformance suite against a real server when
JIP_TEST_OPENSEARCH_URL is set (see conftest.py).
"""

from __future__ import annotations

from typing import Any

import pytest
from opensearchpy.exceptions import ConnectionError as TransportDown

from jip.errors import Invalid, Unavailable
from jip.meta.aggs import parse_aggs, parse_sort
from jip.meta.fields import FIELDS
from jip.meta.index_opensearch import OpenSearchIndex, mappings
from jip.meta.query import MATCH_ALL, parse_query


class FakeIndices:
    def __init__(self, client: FakeClient) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return self._client.recorder(f"indices.{name}")


class FakeClient:
    """Records each call as (method, kwargs) and answers from ``answers``."""

    def __init__(self, **answers: Any) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.answers = answers
        self.indices = FakeIndices(self)

    def recorder(self, method: str) -> Any:
        def call(**kwargs: Any) -> Any:
            self.calls.append((method, kwargs))
            answer = self.answers.get(method.replace(".", "_"))
            if isinstance(answer, BaseException):
                raise answer
            return answer(**kwargs) if callable(answer) else answer

        return call

    def __getattr__(self, name: str) -> Any:
        return self.recorder(name)


def _index(**answers: Any) -> tuple[OpenSearchIndex, FakeClient]:
    client = FakeClient(**answers)
    return OpenSearchIndex(client=client, index="jip-series", refresh=True), client


def test_mapping_follows_the_catalogue() -> None:
    props = mappings()["properties"]
    assert set(props) == set(FIELDS)
    assert mappings()["dynamic"] == "strict"
    assert props["Modality"] == {"type": "keyword"}
    assert props["SeriesDescription"]["type"] == "text"
    assert props["SeriesDescription"]["fields"]["keyword"]["type"] == "keyword"
    assert props["TotalBytes"] == {"type": "long"}
    assert props["SliceThickness"] == {"type": "double"}
    assert props["StudyDate"]["type"] == "date"
    assert props["Contrast"] == {"type": "boolean"}


def test_ensure_index_creates_a_missing_index() -> None:
    index, client = _index(indices_exists=False)
    index.ensure_index()
    methods = [m for m, _ in client.calls]
    assert methods == ["indices.put_index_template", "indices.exists", "indices.create"]
    template = client.calls[0][1]["body"]
    assert template["index_patterns"] == ["jip-series"]
    assert client.calls[2][1]["body"]["mappings"] == mappings()


def test_ensure_index_adds_fields_to_an_existing_index() -> None:
    index, client = _index(indices_exists=True)
    index.ensure_index()
    assert client.calls[-1] == ("indices.put_mapping", {"index": "jip-series",
                                                         "body": mappings()})


def test_upsert_sends_checked_documents_in_bulk_chunks() -> None:
    index, client = _index(bulk={"errors": False, "items": []})
    docs = [{"SeriesInstanceUID": f"1.{i}", "StudyDate": "20200102"} for i in range(501)]
    assert index.upsert(docs) == 501
    assert [m for m, _ in client.calls] == ["bulk", "bulk"]
    first = client.calls[0][1]
    assert first["refresh"] == "wait_for"
    assert first["body"][:2] == [{"index": {"_index": "jip-series", "_id": "1.0"}},
                                 {"SeriesInstanceUID": "1.0", "StudyDate": "2020-01-02"}]
    assert len(first["body"]) == 1000 and len(client.calls[1][1]["body"]) == 2


def test_a_refused_bulk_item_is_reported() -> None:
    answer = {"errors": True, "items": [
        {"index": {"_id": "1.1", "status": 400, "error": {"type": "mapper_parsing_exception"}}}
    ]}
    index, _ = _index(bulk=answer)
    with pytest.raises(Unavailable, match=r"refused index of 1\.1"):
        index.upsert([{"SeriesInstanceUID": "1.1"}])


def test_bad_documents_never_reach_the_server() -> None:
    index, client = _index()
    with pytest.raises(Invalid, match="unknown field"):
        index.upsert([{"SeriesInstanceUID": "1.1", "PatientName": "Doe^Jane"}])
    assert client.calls == []


def test_delete_counts_what_existed() -> None:
    answer = {"errors": True, "items": [
        {"delete": {"_id": "1", "result": "deleted", "status": 200}},
        {"delete": {"_id": "2", "result": "not_found", "status": 404, "error": "missing"}},
    ]}
    index, client = _index(bulk=answer)
    assert index.delete(["1", "2", "1"]) == 1
    assert client.calls[0][1]["body"] == [{"delete": {"_index": "jip-series", "_id": "1"}},
                                          {"delete": {"_index": "jip-series", "_id": "2"}}]


def test_search_sends_the_normalised_query() -> None:
    answer = {"hits": {"total": {"value": 42}, "hits": [{"_source": {"SeriesInstanceUID": "9"}}]}}
    index, client = _index(search=answer)
    query = {"bool": {"filter": [{"term": {"Modality": "CT"}},
                                 {"range": {"StudyDate": {"gte": "20200101"}}}],
                      "should": {"match": {"SeriesDescription": "venous"}}}}
    result = index.search(parse_query(query), sort=parse_sort({"StudyDate": "desc"}),
                          offset=20, limit=10, fields=["Modality"])
    assert (result.total, result.hits) == (42, [{"SeriesInstanceUID": "9"}])
    ((method, kwargs),) = client.calls
    assert method == "search" and kwargs["index"] == "jip-series"
    assert kwargs["body"] == {
        "query": {"bool": {
            "filter": [{"term": {"Modality": {"value": "CT"}}},
                       {"range": {"StudyDate": {"gte": "2020-01-01"}}}],
            "should": [{"match": {"SeriesDescription": {"query": "venous", "operator": "or"}}}],
            "minimum_should_match": 0,
        }},
        "sort": [{"StudyDate": {"order": "desc", "missing": "_last"}},
                 {"SeriesInstanceUID": {"order": "asc", "missing": "_last"}}],
        "from": 20,
        "size": 10,
        "track_total_hits": True,
        "_source": {"includes": ["SeriesInstanceUID", "Modality"]},
    }


def test_search_with_aggregations_is_one_request() -> None:
    answer = {"hits": {"total": {"value": 3}, "hits": []},
              "aggregations": {"m": {"buckets": [{"key": "GE", "doc_count": 3}]}}}
    index, client = _index(search=answer)
    result = index.search(parse_query({"term": {"Modality": "CT"}}), limit=0,
                          aggs=parse_aggs({"m": {"terms": {"field": "Manufacturer"}}}))
    assert result.aggregations == {"m": {"doc_count_error_upper_bound": 0,
                                         "sum_other_doc_count": 0,
                                         "buckets": [{"key": "GE", "doc_count": 3}]}}
    ((_, kwargs),) = client.calls
    assert kwargs["body"]["aggs"] == {"m": {"terms": {"field": "Manufacturer", "size": 10}}}
    assert "sort" not in kwargs["body"]  # no sort asked: the index's own order


def test_bad_queries_never_reach_the_server() -> None:
    index, client = _index()
    with pytest.raises(Invalid, match="unknown field 'Modalty'"):
        index.search(parse_query({"term": {"Modalty": "CT"}}))
    with pytest.raises(Invalid, match="unknown aggregation 'avg'"):
        index.aggregate(MATCH_ALL, parse_aggs({"x": {"avg": {"field": "SliceThickness"}}}))
    assert client.calls == []


def test_aggregation_answers_are_trimmed_to_the_common_shape() -> None:
    answer = {"aggregations": {
        "contrast": {"doc_count_error_upper_bound": 0, "sum_other_doc_count": 0, "buckets": [
            {"key": 1, "key_as_string": "true", "doc_count": 5},
            {"key": 0, "key_as_string": "false", "doc_count": 2}]},
        "days": {"doc_count_error_upper_bound": 0, "sum_other_doc_count": 3, "buckets": [
            {"key": 1577836800000, "key_as_string": "2020-01-01T00:00:00.000Z",
             "doc_count": 4}]},
        "thick": {"buckets": [
            {"key": "*-3.0", "to": 3.0, "to_as_string": "3.0", "doc_count": 7},
            {"key": "thick", "from": 3.0, "doc_count": 1}]},
        "years": {"buckets": [
            {"key_as_string": "2020-01-01", "key": 1577836800000, "doc_count": 9}]},
        "patients": {"value": 12},
    }}
    index, client = _index(search=answer)
    result = index.aggregate(parse_query({"term": {"Modality": "CT"}}), parse_aggs({
        "contrast": {"terms": {"field": "Contrast"}},
        "days": {"terms": {"field": "StudyDate", "size": 1}},
        "thick": {"range": {"field": "SliceThickness",
                            "ranges": [{"to": 3}, {"key": "thick", "from": 3}]}},
        "years": {"date_histogram": {"field": "StudyDate", "calendar_interval": "year"}},
        "patients": {"cardinality": {"field": "PatientID"}},
    }))
    body = client.calls[0][1]["body"]
    assert body["size"] == 0
    assert body["aggs"]["thick"] == {"range": {"field": "SliceThickness", "ranges": [
        {"key": "*-3.0", "to": 3.0}, {"key": "thick", "from": 3.0}]}}
    assert body["aggs"]["years"]["date_histogram"]["format"] == "yyyy-MM-dd"
    assert result == {
        "contrast": {"doc_count_error_upper_bound": 0, "sum_other_doc_count": 0, "buckets": [
            {"key": True, "doc_count": 5}, {"key": False, "doc_count": 2}]},
        "days": {"doc_count_error_upper_bound": 0, "sum_other_doc_count": 3,
                 "buckets": [{"key": "2020-01-01", "doc_count": 4}]},
        "thick": {"buckets": [{"key": "*-3.0", "to": 3.0, "doc_count": 7},
                              {"key": "thick", "from": 3.0, "doc_count": 1}]},
        "years": {"buckets": [{"key_as_string": "2020-01-01", "key": 1577836800000,
                               "doc_count": 9}]},
        "patients": {"value": 12},
    }


def test_count_clear_and_field_values() -> None:
    terms = {"aggregations": {"values": {"buckets": [{"key": "CT", "doc_count": 3}]}}}
    index, client = _index(count={"count": 7}, search=terms, delete_by_query={})
    assert index.count() == 7
    assert index.field_values("Modality", 5) == [{"key": "CT", "doc_count": 3}]
    index.clear()
    assert client.calls[-1][0] == "delete_by_query"
    assert client.calls[-1][1]["body"] == {"query": {"match_all": {}}}


def test_an_unreachable_server_is_unavailable() -> None:
    index, _ = _index(count=TransportDown("N/A", "refused", Exception("refused")))
    with pytest.raises(Unavailable, match="not reachable"):
        index.count()


def test_from_url_reads_credentials() -> None:
    index = OpenSearchIndex.from_url("https://jip:secret@search.example:9200", index="x")
    assert index.index == "x"
    connection = index.client.transport.hosts[0]
    assert (connection["host"], connection["port"]) == ("search.example", 9200)
    with pytest.raises(Invalid, match="not an OpenSearch URL"):
        OpenSearchIndex.from_url("ftp://x")


def test_requests_reach_the_right_endpoints() -> None:
    """The real opensearch-py client, its transport replaced: methods, paths, parameters."""
    from opensearchpy import OpenSearch

    client = OpenSearch(hosts=["http://localhost:9"])
    sent: list[tuple[str, str, dict[str, Any]]] = []

    def perform_request(method: str, url: str, params: Any = None, body: Any = None,
                        **_: Any) -> Any:
        sent.append((method, url, dict(params or {})))
        if url.endswith("_bulk"):
            return {"errors": False, "items": [{"delete": {"result": "deleted"}}]}
        if url.endswith("_search"):
            return {"hits": {"total": {"value": 0}, "hits": []}}
        return {"count": 0} if url.endswith("_count") else {}

    client.transport.perform_request = perform_request  # type: ignore[method-assign,assignment]
    index = OpenSearchIndex(client=client, index="jip-series", refresh=True)
    index.ensure_index()
    index.upsert([{"SeriesInstanceUID": "1.2"}])
    index.delete(["1.2"])
    index.search(parse_query({"term": {"Modality": "CT"}}),
                 aggs=parse_aggs({"m": {"terms": {"field": "Modality"}}}))
    index.count()
    index.clear()
    assert [(m, u) for m, u, _ in sent] == [
        ("PUT", "/_index_template/jip-series"),
        ("HEAD", "/jip-series"),
        ("PUT", "/jip-series"),
        ("POST", "/_bulk"),
        ("POST", "/_bulk"),
        ("POST", "/jip-series/_search"),
        ("POST", "/jip-series/_count"),
        ("POST", "/jip-series/_delete_by_query"),
    ]
    assert sent[3][2] == {"refresh": b"wait_for"}
    assert sent[-1][2] == {"conflicts": b"proceed", "refresh": b"true"}
