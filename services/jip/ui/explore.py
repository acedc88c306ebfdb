"""The Explore page's facets: selections in the URL become a cohort query, and each facet's
counts come from meta's aggregations under the other facets' selections."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from jip.errors import Invalid

PAGE_SIZE = 25
RESULT_FIELDS = [
    "SeriesInstanceUID",
    "StudyInstanceUID",
    "Modality",
    "BodyPartExamined",
    "SeriesDescription",
    "StudyDate",
    "PatientSex",
    "PatientAgeYears",
    "Manufacturer",
    "SliceThickness",
    "NumberOfInstances",
]


@dataclass(frozen=True)
class Facet:
    """One facet panel; ``ranges`` (key, from, to) make it a range facet."""

    name: str
    label: str
    kind: str = "terms"  # terms, range or year
    ranges: tuple[tuple[str, float | None, float | None], ...] = ()

    def agg(self) -> dict[str, Any]:
        if self.kind == "range":
            ranges = [
                {
                    "key": key,
                    **({"from": lo} if lo is not None else {}),
                    **({"to": hi} if hi is not None else {}),
                }
                for key, lo, hi in self.ranges
            ]
            return {"range": {"field": self.name, "ranges": ranges}}
        if self.kind == "year":
            return {"date_histogram": {"field": self.name, "calendar_interval": "year"}}
        return {"terms": {"field": self.name, "size": 30}}

    def clause(self, selected: Sequence[str]) -> dict[str, Any]:
        if self.kind == "terms":
            return {"terms": {self.name: list(selected)}}
        should: list[dict[str, Any]] = []
        for value in selected:
            if self.kind == "year":
                year = _year(value)
                should.append(
                    {"range": {self.name: {"gte": f"{year}-01-01", "lt": f"{year + 1}-01-01"}}}
                )
                continue
            bounds = {key: (lo, hi) for key, lo, hi in self.ranges}
            if value not in bounds:
                raise Invalid(f"{self.name}: unknown range {value!r}")
            lo, hi = bounds[value]
            limits = {
                **({"gte": lo} if lo is not None else {}),
                **({"lt": hi} if hi is not None else {}),
            }
            should.append({"range": {self.name: limits}})
        return {"bool": {"should": should}}


FACETS = [
    Facet("Modality", "Modality"),
    Facet("BodyPartExamined", "Body part"),
    Facet("Manufacturer", "Manufacturer"),
    Facet("StudyDate", "Study year", kind="year"),
    Facet("PatientSex", "Sex"),
    Facet(
        "PatientAgeYears",
        "Age (years)",
        kind="range",
        ranges=(("0-18", 0, 18), ("18-40", 18, 40), ("40-65", 40, 65), ("65+", 65, None)),
    ),
    Facet(
        "SliceThickness",
        "Slice thickness (mm)",
        kind="range",
        ranges=(("<1", None, 1), ("1-3", 1, 3), ("3-5", 3, 5), ("5+", 5, None)),
    ),
]


def _year(value: str) -> int:
    try:
        return int(value[:4])
    except ValueError:
        raise Invalid(f"StudyDate: expected a year, got {value!r}") from None


@dataclass
class Selection:
    """What the researcher picked: facet values and a free query (cohort language)."""

    facets: dict[str, list[str]] = field(default_factory=dict)
    free: dict[str, Any] | None = None
    free_text: str = ""

    @classmethod
    def parse(cls, params: Mapping[str, Sequence[str]], free_text: str) -> Selection:
        facets = {f.name: list(params[f.name]) for f in FACETS if params.get(f.name)}
        free: dict[str, Any] | None = None
        if free_text.strip():
            try:
                parsed = json.loads(free_text)
            except ValueError as exc:
                raise Invalid(f"query: not valid JSON ({exc})") from None
            if not isinstance(parsed, dict):
                raise Invalid("query: expected a JSON object (a cohort query clause)")
            free = parsed
        return cls(facets=facets, free=free, free_text=free_text)

    def query(self, *, without: str | None = None) -> dict[str, Any] | None:
        clauses = [
            facet.clause(self.facets[facet.name])
            for facet in FACETS
            if facet.name in self.facets and facet.name != without
        ]
        if self.free is not None:
            clauses.append(self.free)
        return {"bool": {"filter": clauses}} if clauses else None

    def is_selected(self, name: str, key: str) -> bool:
        return key in self.facets.get(name, [])


def aggregation_requests(selection: Selection) -> list[tuple[dict[str, Any] | None, list[Facet]]]:
    """One aggregate call per distinct query: a facet ignores its own selection."""
    groups: dict[str, tuple[dict[str, Any] | None, list[Facet]]] = {}
    for facet in FACETS:
        query = selection.query(without=facet.name)
        key = json.dumps(query, sort_keys=True)
        groups.setdefault(key, (query, []))[1].append(facet)
    return list(groups.values())


def buckets(facet: Facet, aggregation: Mapping[str, Any]) -> list[tuple[str, int]]:
    """(key, count) pairs of one facet; empty range and year buckets are left out."""
    result = []
    for bucket in aggregation.get("buckets", []):
        key = bucket.get("key_as_string", bucket.get("key"))
        if facet.kind == "year":
            key = str(key)[:4]
        count = int(bucket.get("doc_count", 0))
        if facet.kind != "terms" and not count:
            continue
        result.append((str(key), count))
    return result


# -- charts: the facets' distributions, drawn by jip.ui.charts ----------------------------

# Ten-year bins for the age histogram (the facet's four ranges are for filtering).
AGE_BINS: tuple[tuple[str, float | None, float | None], ...] = (
    *((f"{lo}-{lo + 10}", float(lo), float(lo + 10)) for lo in range(0, 90, 10)),
    ("90+", 90.0, None),
)


@dataclass(frozen=True)
class Chart:
    """One picture of the Explore and cohort pages: its aggregation and how to read it."""

    name: str
    title: str
    agg: dict[str, Any]
    unit: str = "series"
    histogram: bool = False  # ordered bins: empty ones at either end are left out


CHARTS = {
    chart.name: chart
    for chart in (
        Chart(
            "age",
            "Age at study (years)",
            Facet("PatientAgeYears", "Age", kind="range", ranges=AGE_BINS).agg(),
            histogram=True,
        ),
        Chart(
            "years",
            "Studies per year",
            {"date_histogram": {"field": "StudyDate", "calendar_interval": "year"}},
            unit="studies",
            histogram=True,
        ),
        Chart("modalities", "Modalities", {"terms": {"field": "Modality", "size": 20}}),
        Chart("manufacturers", "Manufacturers", {"terms": {"field": "Manufacturer", "size": 15}}),
    )
}


def chart_buckets(chart: Chart, aggregation: Mapping[str, Any]) -> list[tuple[str, int]]:
    """(label, count) in the aggregation's order; a histogram without its empty ends."""
    pairs = [
        (
            str(b.get("key_as_string", b.get("key")))[:4]
            if chart.name == "years"
            else str(b.get("key")),
            int(b.get("doc_count", 0)),
        )
        for b in aggregation.get("buckets", [])
    ]
    if chart.histogram:
        filled = [i for i, (_, count) in enumerate(pairs) if count]
        pairs = pairs[filled[0] : filled[-1] + 1] if filled else []
    return pairs


def within_year(query: Mapping[str, Any] | None, year: str) -> dict[str, Any]:
    """``query`` narrowed to studies of one calendar year (StudyDate)."""
    start = int(year)
    clause = {"range": {"StudyDate": {"gte": f"{start}-01-01", "lt": f"{start + 1}-01-01"}}}
    return {"bool": {"filter": [*([query] if query else []), clause]}}
