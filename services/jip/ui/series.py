"""The series page: a scrollable image viewer with window presets, SEG overlays drawn
over the images, and the results that workflow runs made from the series.

Everything is read through the site's API with the session's token (:mod:`.api`), so a
series, a SEG or a result table outside the user's projects is not found here either.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Query, Request, Response
from pydicom.datadict import keyword_for_tag

from jip import errors
from jip.ui import explore, overlay
from jip.ui.api import Api, ApiError
from jip.ui.routes import PageRoute, UserDep, render

router = APIRouter(tags=["ui"], route_class=PageRoute, include_in_schema=False)

WINDOW_PRESETS = {
    "default": None,
    "soft tissue": "40,400,linear",
    "lung": "-600,1500,linear",
    "bone": "400,1800,linear",
    "brain": "40,80,linear",
}
SEG_MODALITY = "SEG"
TABLES_SHOWN = 3  # newest result tables shown inline; older ones are a download link away
ROWS_SHOWN = 50
FEATURES_SHOWN = 6
# Columns that say what a radiomics row is about (operators/radiomics writes them first).
ID_COLUMNS = ("segment_number", "segment_label")


@dataclass
class ResultTable:
    """A CSV result of a run on this series, with the first rows and columns to show."""

    run_id: str
    name: str
    download: str
    columns: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    total_columns: int = 0
    error: str | None = None


@router.get("/ui/series/{study}/{series}")
async def series_page(
    request: Request,
    user: UserDep,
    study: str,
    series: str,
    window: Annotated[str, Query()] = "default",
) -> Response:
    request.state.ui_user = user
    api = Api(request)
    base = f"/dicom-web/studies/{quote(study)}/series/{quote(series)}"
    instances = await api.get(f"{base}/metadata", headers={"Accept": "application/dicom+json"})
    instances.sort(key=lambda item: _number(_value(item, "00200013")))
    header = _header(instances[0]) if instances else []
    preset = WINDOW_PRESETS.get(window)
    query = f"?{urlencode({'window': preset})}" if preset else ""
    frames = []
    for item in instances:
        uid = str(_value(item, "00080018"))
        frames.append(
            {"src": f"/ui/frame/{quote(study)}/{quote(series)}/{quote(uid)}{query}", "uid": uid}
        )
    found = await api.post(
        "/api/meta/search",
        json={
            "query": {"term": {"ReferencedSeriesInstanceUID": series}},
            "limit": 50,
            "fields": explore.RESULT_FIELDS,
        },
    )
    overlays, overlay_errors = await _overlays(api, study, series, found["hits"])
    tables, tables_error = await _result_tables(api, series)
    return render(
        request,
        "series.html",
        study=study,
        series=series,
        header=header,
        frames=frames,
        presets=list(WINDOW_PRESETS),
        window=window,
        linked=found["hits"],
        overlays=overlays,
        overlay_errors=overlay_errors,
        tables=tables,
        tables_error=tables_error,
    )


@router.get("/ui/frame/{study}/{series}/{instance}")
async def frame(
    request: Request,
    user: UserDep,
    study: str,
    series: str,
    instance: str,
    window: Annotated[str | None, Query()] = None,
) -> Response:
    path = f"/dicom-web/studies/{quote(study)}/series/{quote(series)}/instances/{quote(instance)}"
    response = await Api(request).call(
        "GET",
        f"{path}/rendered",
        params={"window": window} if window else None,
        headers={"Accept": "image/png"},
    )
    return Response(
        response.content,
        media_type=response.headers.get("content-type"),
        headers={"Cache-Control": "private, max-age=300"},
    )


@router.get("/ui/overlay/{study}/{series}/{seg_series}/{instance}")
async def overlay_image(
    request: Request,
    user: UserDep,
    study: str,
    series: str,
    seg_series: str,
    instance: str,
    segment: Annotated[list[int] | None, Query(max_length=1000)] = None,
) -> Response:
    """The chosen segments (default all) of a SEG on one source image: an RGBA PNG that
    is transparent where no segment is."""
    try:
        drawn = await overlay.load(Api(request), study, series, seg_series)
    except overlay.BadSeg as exc:
        raise errors.Invalid(str(exc)) from None
    return Response(
        drawn.png(instance, segment),
        media_type="image/png",
        headers={"Cache-Control": "private, max-age=300"},
    )


async def _overlays(
    api: Api, study: str, series: str, linked: list[dict[str, Any]]
) -> tuple[list[overlay.SegOverlay], list[str]]:
    """The linked SEGs that can be drawn, and why the others cannot."""
    drawn, problems = [], []
    for hit in linked:
        if hit.get("Modality") != SEG_MODALITY:
            continue
        uid = str(hit.get("SeriesInstanceUID", ""))
        try:
            drawn.append(await overlay.load(api, study, series, uid))
        except overlay.BadSeg as exc:
            problems.append(str(exc))
        except ApiError as exc:
            problems.append(f"SEG series {uid}: {exc.detail}")
    return drawn, problems


async def _result_tables(api: Api, series: str) -> tuple[list[ResultTable], str | None]:
    """The newest CSV results made from ``series``, or why they cannot be listed."""
    try:
        results = await api.get("/api/flow/results", params={"series": series, "kind": "file"})
    except ApiError as exc:
        return [], f"results cannot be listed: {exc.detail}"
    tables = []
    for result in [r for r in results if r["name"].lower().endswith(".csv")][:TABLES_SHOWN]:
        run_id = str(result["run_id"])
        table = ResultTable(
            run_id=run_id,
            name=str(result["name"]).rsplit("/", 1)[-1],
            download=f"/ui/runs/{quote(run_id)}/results/{int(result['id'])}",
        )
        try:
            response = await api.call("GET", str(result["url"]))
            _fill(table, response.content.decode("utf-8-sig", errors="replace"))
        except ApiError as exc:
            table.error = exc.detail
        tables.append(table)
    return tables, None


def _fill(table: ResultTable, text: str) -> None:
    """The identifying columns and the first features of the first rows."""
    reader = csv.reader(io.StringIO(text))
    head = next(reader, [])
    ids = [i for i, name in enumerate(head) if name in ID_COLUMNS]
    features = [
        i for i, name in enumerate(head) if name not in ID_COLUMNS and "instance_uid" not in name
    ]
    chosen = ids + features[:FEATURES_SHOWN]
    table.columns = [head[i] for i in chosen]
    table.total_columns = len(head)
    for row in reader:
        if len(table.rows) == ROWS_SHOWN:
            break
        table.rows.append([row[i] if i < len(row) else "" for i in chosen])


def _value(item: dict[str, Any], tag: str) -> Any:
    values = item.get(tag, {}).get("Value") or [""]
    return values[0]


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _header(item: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(tag, keyword, VR, value) rows of one instance's DICOM JSON (bulk data left out)."""
    rows = []
    for tag in sorted(item):
        element = item[tag]
        values = element.get("Value")
        if values is None:
            shown = "(bulk data)" if "BulkDataURI" in element else ""
        elif element.get("vr") == "SQ":
            shown = f"({len(values)} item(s))"
        elif element.get("vr") == "PN":
            shown = "\\".join(str(v.get("Alphabetic", "")) for v in values)
        else:
            shown = "\\".join(str(v) for v in values)
        keyword = keyword_for_tag(int(tag, 16)) or ""
        rows.append((f"({tag[:4]},{tag[4:]})", keyword, element.get("vr", ""), shown[:200]))
    return rows
