"""Dependencies of the DICOMweb routes: the public base URL and the metadata cache.

URLs that DICOMweb returns (RetrieveURL, BulkDataURI) must be the ones the client can
reach, also behind a reverse proxy or an ingress: the base URL honours ``Forwarded``
(RFC 7239) first, then ``X-Forwarded-Proto``/``-Host``/``-Port``/``-Prefix``. Values
that do not look like a scheme, a host or a path are ignored rather than echoed.
"""

from __future__ import annotations

import re
import threading
from typing import Annotated

from fastapi import Depends, Request

from jip.base import CurrentUserDep, project_scope
from jip.config import DicomWebSettings
from jip.store.catalog.catalog import Catalog
from jip.store.deps import get_adapters
from jip.store.dicomweb.series_metadata import SeriesMetadata

PREFIX = "/dicom-web"

_HOST = re.compile(r"^[A-Za-z0-9.\-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")
_PATH = re.compile(r"^(/[A-Za-z0-9._~\-]+)*/?$")
_PROXY_HEADERS = (
    "forwarded",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-for",
)
_lock = threading.Lock()


def _first(value: str | None) -> str | None:
    """The first (client-facing) entry of a comma-separated proxy header."""
    if not value:
        return None
    return value.split(",")[0].strip().strip('"') or None


def _forwarded(header: str | None) -> dict[str, str]:
    """The first element of an RFC 7239 ``Forwarded`` header as a dict."""
    result: dict[str, str] = {}
    for pair in (header or "").split(",")[0].split(";"):
        name, _, value = pair.partition("=")
        if value:
            result[name.strip().lower()] = value.strip().strip('"')
    return result


def public_base_url(request: Request) -> str:
    """The absolute URL of the DICOMweb root as the client addressed it."""
    headers = request.headers
    forwarded = _forwarded(headers.get("forwarded"))
    proto = forwarded.get("proto") or _first(headers.get("x-forwarded-proto"))
    if proto not in ("http", "https"):
        proto = request.url.scheme
    host = forwarded.get("host") or _first(headers.get("x-forwarded-host"))
    port = _first(headers.get("x-forwarded-port"))
    default_port = (proto, port) in (("http", "80"), ("https", "443"))
    if (
        host
        and ":" not in host.rsplit("]", 1)[-1]
        and port
        and port.isdecimal()
        and not default_port
    ):
        host = f"{host}:{port}"
    if not host or not _HOST.match(host):
        host = headers.get("host") or ""
        if not _HOST.match(host):  # absent or forged: name the server itself
            server = request.scope.get("server") or ("localhost", None)
            host = str(server[0]) + (f":{server[1]}" if server[1] else "")
        host = _with_server_port(request, host, proto)
    prefix = _first(headers.get("x-forwarded-prefix")) or ""
    if not _PATH.match(prefix):
        prefix = ""
    root_path = str(request.scope.get("root_path") or "")
    return f"{proto}://{host}{prefix.rstrip('/')}{root_path.rstrip('/')}{PREFIX}"


def _with_server_port(request: Request, host: str, proto: str) -> str:
    """Add the port this server listens on to a port-less ``Host`` of a direct client.

    dicomweb-client (requests) sends ``Host: 127.0.0.1`` without the port; a proxy's
    port-less Host is left alone (its port is not ours to guess).
    """
    server = request.scope.get("server")
    if ":" in host.rsplit("]", 1)[-1] or not server or server[1] is None:
        return host
    if any(name in request.headers for name in _PROXY_HEADERS):
        return host
    port = str(server[1])
    return host if (proto, port) in (("http", "80"), ("https", "443")) else f"{host}:{port}"


def get_series_metadata(request: Request) -> SeriesMetadata:
    """One metadata cache per app, made on first use next to the site's data."""
    state = request.app.state
    cache: SeriesMetadata | None = getattr(state, "series_metadata", None)
    if cache is None:
        with _lock:
            cache = getattr(state, "series_metadata", None)
            if cache is None:
                adapters = get_adapters(request)
                cache = SeriesMetadata(
                    adapters.catalog,
                    adapters.storage,
                    adapters.settings.data_dir / "cache" / "series-metadata",
                )
                state.series_metadata = cache
    return cache


def get_scoped_catalog(request: Request, user: CurrentUserDep) -> Catalog:
    """The catalog as the caller may see it: the series of their projects (admins, and
    everyone while authentication is off, see all). Every DICOMweb read goes through
    it, so a series outside the caller's projects is a 404 on every route."""
    return get_adapters(request).catalog.scoped(project_scope(user))


def get_limits(request: Request) -> DicomWebSettings:
    """The bounds on one request's work (``store.dicomweb`` settings)."""
    return get_adapters(request).settings.store.dicomweb


ScopedCatalogDep = Annotated[Catalog, Depends(get_scoped_catalog)]
LimitsDep = Annotated[DicomWebSettings, Depends(get_limits)]
BaseUrlDep = Annotated[str, Depends(public_base_url)]
SeriesMetadataDep = Annotated[SeriesMetadata, Depends(get_series_metadata)]
