"""The cohort export: a self-contained JSON document any site can import and run.

It carries the query, not the series, since series UIDs are site-specific (they can be
included on request, for sites that share an archive). :func:`parse_export` checks a
document part by part, and the ``check_*`` functions check what a cohort is saved with,
so that an import and a cohort made here are held to the same rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jip.errors import Invalid
from jip.meta.limits import DEFAULT_LIMITS, QueryLimits
from jip.meta.query import parse_query
from jip.store import check_uid

EXPORT_FORMAT = "jip.cohort"
EXPORT_VERSION = 1
_EXPORT_KEYS = {
    "format",
    "format_version",
    "name",
    "description",
    "query",
    "created_at",
    "source_site",
    "exported_at",
    "series",
}
MAX_NAME = 128
MAX_DESCRIPTION = 10_000


def check_name(name: object) -> str:
    text = name.strip() if isinstance(name, str) else ""
    if not text or len(text) > MAX_NAME or any(ord(c) < 32 for c in text):
        raise Invalid(f"name: expected 1 to {MAX_NAME} printable characters, got {name!r}")
    return text


def check_description(description: object) -> str:
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        raise Invalid(f"description: expected a string of at most {MAX_DESCRIPTION} characters")
    return description


def check_query(query: object, limits: QueryLimits = DEFAULT_LIMITS) -> dict[str, Any]:
    """The query as given, once the cohort language accepts it (400 naming the path)."""
    if query is None:
        return {}
    if not isinstance(query, Mapping):
        raise Invalid(f"query: expected an object (a query clause), got {query!r}")
    parse_query(query, "query", limits)
    return dict(query)


def parse_export(document: object, limits: QueryLimits = DEFAULT_LIMITS) -> dict[str, Any]:
    """The parts of an exported cohort, checked; Invalid names the part at fault."""
    if not isinstance(document, Mapping):
        raise Invalid("expected a cohort export (a JSON object)")
    unknown = sorted(set(document) - _EXPORT_KEYS)
    if unknown:
        raise Invalid(f"{unknown[0]}: unknown key in a cohort export")
    if document.get("format") != EXPORT_FORMAT:
        raise Invalid(f"format: expected {EXPORT_FORMAT!r}, got {document.get('format')!r}")
    version = document.get("format_version")
    if (
        isinstance(version, bool)
        or not isinstance(version, int)
        or not (1 <= version <= EXPORT_VERSION)
    ):
        raise Invalid(
            f"format_version: this site reads versions 1 to {EXPORT_VERSION}, got {version!r}"
        )
    source = document.get("source_site", "")
    if not isinstance(source, str):
        raise Invalid("source_site: expected a string")
    parsed: dict[str, Any] = {
        "name": check_name(document.get("name")),
        "description": check_description(document.get("description", "")),
        "query": check_query(document.get("query"), limits),
        "source_site": source,
    }
    if "series" in document:
        series = document["series"]
        if not isinstance(series, list):
            raise Invalid("series: expected a list of SeriesInstanceUIDs")
        parsed["series"] = [check_uid(uid, f"series[{i}]") for i, uid in enumerate(series)]
    return parsed
