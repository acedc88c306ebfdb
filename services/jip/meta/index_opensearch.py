"""The metadata index on OpenSearch (the cluster shape), through ``opensearch-py``.

A thin pass-through: queries, aggregations and sorts come parsed and normalised by
:mod:`jip.meta.query` and :mod:`jip.meta.aggs` (so both shapes reject the same input
with the same message), are sent back as DSL, and the answers trimmed to the shapes
:mod:`jip.meta.index` documents. The mapping comes from the field catalogue: ``text`` fields get the standard analyzer and an
exact ``.keyword`` twin, integers are ``long`` (TotalBytes passes 2^31), floats ``double``
(so that 0.6 stays 0.6 in facets), dates ``yyyy-MM-dd`` or ``yyyyMMdd``. One shard: facet
counts are then exact, and one shard holds tens of millions of series documents.

The client is passed in (tests pass a fake); :meth:`OpenSearchIndex.from_url` builds one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from jip.errors import Invalid, Unavailable
from jip.meta.aggs import (
    Agg,
    CardinalityAgg,
    DateHistogramAgg,
    RangeAgg,
    SortKey,
    TermsAgg,
    parse_aggs,
)
from jip.meta.fields import FIELDS, ID_FIELD, FieldType, normalize_document
from jip.meta.index import (
    SearchResult,
    check_fields,
    check_page,
    day_of_epoch_ms,
    range_bucket,
)
from jip.meta.query import (
    MATCH_ALL,
    Bool,
    Exists,
    Match,
    MatchAll,
    Prefix,
    Query,
    Range,
    Term,
    Terms,
    Wildcard,
)

DEFAULT_INDEX = "jip-series"
_BULK_CHUNK = 500
_MAPPED: dict[FieldType, dict[str, Any]] = {
    FieldType.KEYWORD: {"type": "keyword"},
    FieldType.TEXT: {
        "type": "text",
        "analyzer": "standard",
        "fields": {"keyword": {"type": "keyword", "ignore_above": 1024}},
    },
    FieldType.INTEGER: {"type": "long"},
    FieldType.FLOAT: {"type": "double"},
    FieldType.DATE: {"type": "date", "format": "strict_date||basic_date"},
    FieldType.BOOLEAN: {"type": "boolean"},
}


def mappings() -> dict[str, Any]:
    """The index mapping, one property per catalogue field; other fields are refused."""
    return {
        "dynamic": "strict",
        "properties": {name: dict(_MAPPED[f.type]) for name, f in FIELDS.items()},
    }


def index_template(index: str) -> dict[str, Any]:
    return {
        "index_patterns": [index],
        "template": {
            "settings": {"number_of_shards": 1},
            "mappings": mappings(),
        },
    }


class OpenSearchIndex:
    """:class:`jip.meta.index.MetaIndex` on an OpenSearch index.

    ``refresh``: make every write visible to search before returning (tests); otherwise
    writes show within the index's refresh interval (1 s).
    """

    def __init__(self, *, client: Any, index: str = DEFAULT_INDEX, refresh: bool = False):
        self.client = client
        self.index = index
        self._refresh = refresh

    @classmethod
    def from_url(
        cls, url: str, *, index: str = DEFAULT_INDEX, refresh: bool = False, **client_options: Any
    ) -> OpenSearchIndex:
        """``https://user:password@host:9200``; ``client_options`` go to the client."""
        from opensearchpy import OpenSearch

        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise Invalid(f"not an OpenSearch URL: {url!r}")
        if parts.username:
            client_options.setdefault("http_auth", (parts.username, parts.password or ""))
        netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
        host = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
        return cls(client=OpenSearch(hosts=[host], **client_options), index=index, refresh=refresh)

    def ensure_index(self) -> None:
        """Install the template and create the index, or add new catalogue fields to it."""
        self._call(
            self.client.indices.put_index_template, name=self.index, body=index_template(self.index)
        )
        if self._call(self.client.indices.exists, index=self.index):
            self._call(self.client.indices.put_mapping, index=self.index, body=mappings())
        else:
            self._call(
                self.client.indices.create,
                index=self.index,
                body={"settings": {"number_of_shards": 1}, "mappings": mappings()},
            )

    def upsert(self, docs: Iterable[Mapping[str, Any]]) -> int:
        latest = {d[ID_FIELD]: d for d in map(normalize_document, docs)}
        items = list(latest.items())
        for start in range(0, len(items), _BULK_CHUNK):
            body: list[dict[str, Any]] = []
            for uid, doc in items[start : start + _BULK_CHUNK]:
                body += [{"index": {"_index": self.index, "_id": uid}}, doc]
            self._bulk(body)
        return len(items)

    def delete(self, series_uids: Iterable[str]) -> int:
        uids = list(dict.fromkeys(series_uids))
        deleted = 0
        for start in range(0, len(uids), _BULK_CHUNK):
            body = [
                {"delete": {"_index": self.index, "_id": uid}}
                for uid in uids[start : start + _BULK_CHUNK]
            ]
            items = self._bulk(body, missing_ok=True)
            deleted += sum(1 for i in items if i.get("delete", {}).get("result") == "deleted")
        return deleted

    def search(
        self,
        query: Query = MATCH_ALL,
        sort: Sequence[SortKey] = (),
        offset: int = 0,
        limit: int = 20,
        fields: Sequence[str] | None = None,
        aggs: Mapping[str, Agg] | None = None,
    ) -> SearchResult:
        wanted, specs = check_fields(fields), aggs or {}
        check_page(offset, limit)
        body: dict[str, Any] = {
            "query": query_to_dsl(query),
            "from": offset,
            "size": limit,
            "track_total_hits": True,
            "_source": {"includes": wanted} if wanted is not None else True,
        }
        if sort:
            body["sort"] = sort_to_dsl(sort)
        if specs:
            body["aggs"] = aggs_to_dsl(specs)
        response = self._search(body)
        hits = response["hits"]
        found = response.get("aggregations", {})
        return SearchResult(
            int(hits["total"]["value"]),
            [h["_source"] for h in hits["hits"]],
            {name: normalise_agg(agg, found.get(name, {})) for name, agg in specs.items()},
        )

    def aggregate(self, query: Query, aggs: Mapping[str, Agg]) -> dict[str, Any]:
        body = {"query": query_to_dsl(query), "size": 0, "aggs": aggs_to_dsl(aggs)}
        response = self._search(body)
        found = response.get("aggregations", {})
        return {name: normalise_agg(agg, found.get(name, {})) for name, agg in aggs.items()}

    def field_values(self, field: str, size: int = 100) -> list[dict[str, Any]]:
        values = parse_aggs({"values": {"terms": {"field": field, "size": size}}})
        result = self.aggregate(MATCH_ALL, values)
        return list(result["values"]["buckets"])

    def count(self) -> int:
        return int(self._call(self.client.count, index=self.index)["count"])

    def clear(self) -> None:
        self._call(
            self.client.delete_by_query,
            index=self.index,
            body={"query": {"match_all": {}}},
            refresh=True,
            conflicts="proceed",
        )

    def close(self) -> None:
        self.client.close()

    def _bulk(self, body: list[dict[str, Any]], missing_ok: bool = False) -> list[Any]:
        if not body:
            return []
        options = {"refresh": "wait_for"} if self._refresh else {}
        response = self._call(self.client.bulk, body=body, **options)
        items: list[Any] = response.get("items", [])
        if response.get("errors"):
            for item in items:
                ((action, result),) = item.items()
                if "error" in result and not (missing_ok and result.get("status") == 404):
                    raise Unavailable(
                        f"OpenSearch refused {action} of {result.get('_id')}: {result['error']}"
                    )
        return items

    def _search(self, body: dict[str, Any]) -> Any:
        """One search request; one that OpenSearch refuses as a bad request (too many
        clauses, a pattern too complex to run) is the caller's error, named."""
        from opensearchpy.exceptions import RequestError

        try:
            return self._call(self.client.search, index=self.index, body=body)
        except Unavailable as exc:
            if isinstance(exc.__cause__, RequestError):
                raise Invalid(
                    f"query: OpenSearch refused this search ({_reason(exc.__cause__)}); use "
                    "fewer clauses, values or aggregations, or shorter patterns"
                ) from exc.__cause__
            raise

    @staticmethod
    def _call(method: Any, **kwargs: Any) -> Any:
        from opensearchpy.exceptions import ConnectionError as TransportDown
        from opensearchpy.exceptions import TransportError

        try:
            return method(**kwargs)
        except TransportDown as exc:
            raise Unavailable(f"OpenSearch is not reachable: {exc}") from exc
        except TransportError as exc:
            raise Unavailable(f"OpenSearch answered {exc.status_code}: {exc.error}") from exc


def _reason(exc: Any) -> str:
    """The root cause OpenSearch gives for a refused request, else its error type."""
    info = getattr(exc, "info", None)
    if isinstance(info, Mapping):
        error = info.get("error")
        if isinstance(error, Mapping):
            causes = error.get("root_cause") or [error]
            first = causes[0] if isinstance(causes, list) and causes else error
            if isinstance(first, Mapping) and first.get("reason"):
                return str(first["reason"])[:500]
    return str(getattr(exc, "error", exc))[:500]


# --- the checked tree back to DSL ----------------------------------------------------


def query_to_dsl(query: Query) -> dict[str, Any]:
    match query:
        case MatchAll():
            return {"match_all": {}}
        case Term(field, value):
            return {"term": {field.name: {"value": value}}}
        case Terms(field, values):
            return {"terms": {field.name: list(values)}}
        case Range(field):
            bounds = {op: getattr(query, op) for op in ("gt", "gte", "lt", "lte")}
            return {"range": {field.name: {k: v for k, v in bounds.items() if v is not None}}}
        case Exists(field):
            return {"exists": {"field": field.name}}
        case Wildcard(field, pattern):
            return {"wildcard": {field.name: {"value": pattern}}}
        case Prefix(field, prefix):
            return {"prefix": {field.name: {"value": prefix}}}
        case Match(field, text, _, operator):
            return {"match": {field.name: {"query": text, "operator": operator}}}
        case Bool():
            body: dict[str, Any] = {}
            for occur in ("must", "filter", "should", "must_not"):
                clauses = getattr(query, occur)
                if clauses:
                    body[occur] = [query_to_dsl(c) for c in clauses]
            if query.should:
                body["minimum_should_match"] = query.minimum_should_match
            return {"bool": body}
    raise TypeError(f"not a query node: {query!r}")  # pragma: no cover


def aggs_to_dsl(aggs: Mapping[str, Agg]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, agg in aggs.items():
        match agg:
            case TermsAgg(field, size, include):
                out[name] = {"terms": {"field": field.name, "size": size}}
                if include is not None:
                    out[name]["terms"]["include"] = list(include)
            case RangeAgg(field, ranges):
                specs = [
                    {"key": r.key}
                    | ({} if r.start is None else {"from": r.start})
                    | ({} if r.end is None else {"to": r.end})
                    for r in ranges
                ]
                out[name] = {"range": {"field": field.name, "ranges": specs}}
            case DateHistogramAgg(field, interval):
                out[name] = {
                    "date_histogram": {
                        "field": field.name,
                        "calendar_interval": interval,
                        "format": "yyyy-MM-dd",
                    }
                }
            case CardinalityAgg(field, None):
                out[name] = {"cardinality": {"field": field.name}}
            case CardinalityAgg(field, include):  # counted as the buckets of those values
                values = list(include or ())
                out[name] = {
                    "terms": {"field": field.name, "size": max(len(values), 1), "include": values}
                }
    return out


def sort_to_dsl(keys: Sequence[SortKey]) -> list[dict[str, Any]]:
    return [
        {k.field.name: {"order": "desc" if k.descending else "asc", "missing": "_last"}}
        for k in keys
    ]


def normalise_agg(agg: Agg, raw: Mapping[str, Any]) -> dict[str, Any]:
    """An OpenSearch aggregation answer in the shape :mod:`jip.meta.index` documents."""
    match agg:
        case TermsAgg(field):
            buckets = []
            for b in raw.get("buckets", []):
                key = b["key"]
                if field.type is FieldType.BOOLEAN:
                    key = b.get("key_as_string", str(bool(key)).lower()) == "true"
                elif field.type is FieldType.DATE:
                    key = day_of_epoch_ms(int(key))
                buckets.append({"key": key, "doc_count": int(b["doc_count"])})
            return {
                "doc_count_error_upper_bound": int(raw.get("doc_count_error_upper_bound", 0)),
                "sum_other_doc_count": int(raw.get("sum_other_doc_count", 0)),
                "buckets": buckets,
            }
        case RangeAgg(_, ranges):
            found = raw.get("buckets", [])
            listed = found if isinstance(found, list) else list(found.values())
            counts = [int(b["doc_count"]) for b in listed] + [0] * len(ranges)
            return {
                "buckets": [
                    range_bucket(r.key, r.start, r.end, counts[i]) for i, r in enumerate(ranges)
                ]
            }
        case DateHistogramAgg():
            return {
                "buckets": [
                    {
                        "key_as_string": day_of_epoch_ms(int(b["key"])),
                        "key": int(b["key"]),
                        "doc_count": int(b["doc_count"]),
                    }
                    for b in raw.get("buckets", [])
                ]
            }
        case CardinalityAgg(_, None):
            return {"value": int(raw.get("value", 0))}
        case CardinalityAgg():
            return {"value": sum(1 for b in raw.get("buckets", []) if int(b["doc_count"]))}
    raise TypeError(f"not an aggregation: {agg!r}")  # pragma: no cover
