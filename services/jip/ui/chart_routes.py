"""The pictures of the Explore and cohort pages: one SVG per distribution.

``/ui/charts/<chart>.svg`` takes the Explore page's own query string (facet selections
and ``q``) or ``cohort=<id>``, asks meta's aggregations as the caller (so the project
scope applies), and draws the buckets with :mod:`jip.ui.charts`. Studies per year count
distinct studies (one cardinality per year), not series.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request, Response

from jip.errors import NotFound
from jip.ui import explore
from jip.ui.api import Api, ApiError
from jip.ui.charts import Bar, bar_chart
from jip.ui.routes import PageRoute, UserDep

router = APIRouter(tags=["ui"], route_class=PageRoute, include_in_schema=False)

FROZEN_SERIES = 10_000  # a frozen cohort's series charted (one page of its list)
MAX_YEARS = 40  # studies-per-year bars; older years are left out (and said so)
SVG_HEADERS = {"Cache-Control": "private, no-store"}


async def _query(api: Api, request: Request) -> dict[str, Any] | None:
    """The cohort's query (a frozen cohort: its series list), else the Explore selection."""
    cohort = request.query_params.get("cohort")
    if cohort is None:
        params = {key: request.query_params.getlist(key) for key in request.query_params}
        return explore.Selection.parse(params, request.query_params.get("q", "")).query()
    found = await api.get(f"/api/meta/cohorts/{quote(cohort)}")
    if not found.get("frozen"):
        query: dict[str, Any] | None = found.get("query") or None
        return query
    page = await api.get(
        f"/api/meta/cohorts/{quote(cohort)}/series",
        params={"limit": FROZEN_SERIES, "fields": ["SeriesInstanceUID"]},
    )
    if page["total"] > FROZEN_SERIES:
        raise ApiError(413, f"a frozen cohort of more than {FROZEN_SERIES} series is not charted")
    uids = [hit["SeriesInstanceUID"] for hit in page["hits"]]
    return {"terms": {"SeriesInstanceUID": uids}}


async def _aggregate(api: Api, query: dict[str, Any] | None, agg: dict[str, Any]) -> Any:
    body = await api.post("/api/meta/aggregate", json={"query": query, "aggs": {"chart": agg}})
    return body["aggregations"]["chart"]


async def chart_bars(
    api: Api, chart: explore.Chart, query: dict[str, Any] | None
) -> tuple[list[Bar], str]:
    """The chart's bars under ``query`` and a note for the reader ("" when none)."""
    pairs = explore.chart_buckets(chart, await _aggregate(api, query, chart.agg))
    note = ""
    if chart.name == "years":
        if len(pairs) > MAX_YEARS:
            note = f"the newest {MAX_YEARS} of {len(pairs)} years"
            pairs = pairs[-MAX_YEARS:]
        studies = {"cardinality": {"field": "StudyInstanceUID"}}
        pairs = [
            (year, int((await _aggregate(api, explore.within_year(query, year), studies))["value"]))
            if count
            else (year, 0)
            for year, count in pairs
        ]
    return [Bar(label, count) for label, count in pairs], note


@router.get("/ui/charts/{name}.svg")
async def chart_svg(request: Request, user: UserDep, name: str) -> Response:
    """One distribution as SVG; a refused query is drawn as a note, not an error page."""
    chart = explore.CHARTS.get(name)
    if chart is None:
        raise NotFound(f"no chart {name!r} (charts: {', '.join(explore.CHARTS)})")
    api = Api(request)
    try:
        bars, note = await chart_bars(api, chart, await _query(api, request))
    except ApiError as exc:
        if exc.status == 404:
            raise NotFound(exc.detail) from None
        bars, note = [], f"not available: {exc.detail}"
    svg = bar_chart(chart.title, bars, unit=chart.unit, note=note)
    return Response(svg, media_type="image/svg+xml", headers=SVG_HEADERS)
