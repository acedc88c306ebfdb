"""Retrieve Capabilities (PS3.18 §8.9, Annex H): what this origin server offers.

``OPTIONS /dicom-web`` (or ``GET`` with ``Accept: application/vnd.sun.wadl+xml``)
answers a WADL document; ``application/json`` gets the same description as JSON.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

from jip.store.dicomweb.media_types import DICOM, DICOM_JSON, DICOM_XML, OCTET_STREAM
from jip.store.dicomweb.rendering import RENDERED_MEDIA_TYPES

WADL_NAMESPACE = "http://wadl.dev.java.net/2009/02"
_SEARCH_PARAMS = ["limit", "offset", "includefield", "fuzzymatching", "{attributeID}"]
_RENDER_PARAMS = ["accept", "quality", "viewport", "window"]
_METADATA = [DICOM_JSON, f"multipart/related; type={DICOM_XML}"]
_RENDERED = RENDERED_MEDIA_TYPES
_FRAMES = [
    f"multipart/related; type={OCTET_STREAM}",
    "multipart/related; type=image/jpeg",
    "multipart/related; type=image/jp2",
    "multipart/related; type=image/jls",
    "multipart/related; type=image/dicom-rle",
]


@dataclass(frozen=True)
class Method:
    name: str  # HTTP method
    transaction: str
    produces: list[str]
    params: list[str]


def _retrieve(transaction: str, produces: list[str], params: list[str] | None = None) -> Method:
    return Method("GET", transaction, produces, params or [])


def _search(transaction: str) -> Method:
    return Method("GET", transaction, _METADATA, _SEARCH_PARAMS)


_DICOM = [f"multipart/related; type={DICOM}"]
RESOURCES: dict[str, list[Method]] = {
    "studies": [_search("SearchForStudies"), Method("POST", "StoreInstances", _METADATA, [])],
    "series": [_search("SearchForSeries")],
    "instances": [_search("SearchForInstances")],
    "studies/{study}": [
        _retrieve("RetrieveStudy", _DICOM),
        Method("POST", "StoreStudyInstances", _METADATA, []),
        Method("DELETE", "DeleteStudy", [], []),
    ],
    "studies/{study}/metadata": [_retrieve("RetrieveStudyMetadata", _METADATA)],
    "studies/{study}/rendered": [_retrieve("RetrieveRenderedStudy", _RENDERED, _RENDER_PARAMS)],
    "studies/{study}/thumbnail": [_retrieve("RetrieveStudyThumbnail", _RENDERED, _RENDER_PARAMS)],
    "studies/{study}/series": [_search("SearchForStudySeries")],
    "studies/{study}/instances": [_search("SearchForStudyInstances")],
    "studies/{study}/series/{series}": [
        _retrieve("RetrieveSeries", _DICOM),
        Method("DELETE", "DeleteSeries", [], []),
    ],
    "studies/{study}/series/{series}/metadata": [_retrieve("RetrieveSeriesMetadata", _METADATA)],
    "studies/{study}/series/{series}/rendered": [
        _retrieve("RetrieveRenderedSeries", _RENDERED, _RENDER_PARAMS)
    ],
    "studies/{study}/series/{series}/thumbnail": [
        _retrieve("RetrieveSeriesThumbnail", _RENDERED, _RENDER_PARAMS)
    ],
    "studies/{study}/series/{series}/instances": [_search("SearchForSeriesInstances")],
    "studies/{study}/series/{series}/instances/{instance}": [_retrieve("RetrieveInstance", _DICOM)],
    "studies/{study}/series/{series}/instances/{instance}/metadata": [
        _retrieve("RetrieveInstanceMetadata", _METADATA)
    ],
    "studies/{study}/series/{series}/instances/{instance}/rendered": [
        _retrieve("RetrieveRenderedInstance", _RENDERED, _RENDER_PARAMS)
    ],
    "studies/{study}/series/{series}/instances/{instance}/thumbnail": [
        _retrieve("RetrieveInstanceThumbnail", _RENDERED, _RENDER_PARAMS)
    ],
    "studies/{study}/series/{series}/instances/{instance}/bulkdata/{path}": [
        _retrieve("RetrieveBulkdata", [f"multipart/related; type={OCTET_STREAM}"])
    ],
    "studies/{study}/series/{series}/instances/{instance}/pixeldata": [
        _retrieve("RetrievePixelData", _FRAMES)
    ],
    "studies/{study}/series/{series}/instances/{instance}/frames/{frames}": [
        _retrieve("RetrieveFrames", _FRAMES)
    ],
    "studies/{study}/series/{series}/instances/{instance}/frames/{frames}/rendered": [
        _retrieve("RetrieveRenderedFrames", _RENDERED, _RENDER_PARAMS)
    ],
    "studies/{study}/series/{series}/instances/{instance}/frames/{frames}/thumbnail": [
        _retrieve("RetrieveFrameThumbnail", _RENDERED, _RENDER_PARAMS)
    ],
}


def wadl(base_url: str) -> bytes:
    """The capabilities as a WADL application document."""
    app = ET.Element("application", {"xmlns": WADL_NAMESPACE})
    resources = ET.SubElement(app, "resources", {"base": base_url + "/"})
    for path, methods in RESOURCES.items():
        resource = ET.SubElement(resources, "resource", {"path": path})
        for method in methods:
            node = ET.SubElement(
                resource, "method", {"name": method.name, "id": method.transaction}
            )
            if method.params:
                request = ET.SubElement(node, "request")
                for param in method.params:
                    ET.SubElement(request, "param", {"name": param, "style": "query"})
            response = ET.SubElement(node, "response", {"status": "200"})
            for media_type in method.produces:
                ET.SubElement(response, "representation", {"mediaType": media_type})
    return ET.tostring(app, encoding="utf-8", xml_declaration=True)


def as_json(base_url: str) -> dict[str, Any]:
    """The same capabilities as JSON."""
    return {
        "base": base_url,
        "resources": [
            {
                "path": path,
                "methods": [
                    {
                        "method": m.name,
                        "transaction": m.transaction,
                        "produces": m.produces,
                        "queryParameters": m.params,
                    }
                    for m in methods
                ],
            }
            for path, methods in RESOURCES.items()
        ],
    }
