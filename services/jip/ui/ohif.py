"""The OHIF viewer at ``/viewer``: its files, its configuration and a DICOMweb mount for it.

OHIF is a single-page application that reads DICOMweb with ``fetch``; it cannot send the
UI's bearer token. So the viewer's data source is ``/viewer/dicom-web``, a read-only
(GET) mount that takes the access token from the UI's session cookie (HttpOnly,
SameSite=Strict, never in a URL) and hands the request, with that token as its bearer,
to the site's own ``/dicom-web`` routes in the same process. Every read is then checked
and scoped to the caller's projects by exactly the code that serves the CLI and
dicomweb-client, and the URLs DICOMweb returns point back at the mount (the mount is
the request's ``root_path``).

The routes are plain Starlette routes: the app-wide bearer guard does not apply to them,
so each checks the session itself. The viewer's page sends a logged-out visitor to the
login; its static files (code, no data) are public and cached for long; the session is
renewed from the refresh cookie while the viewer is open (``/viewer/session``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from jip.config import OhifSettings
from jip.ui.ohif_fetch import MOUNT, VERSION, dist_dir, is_installed
from jip.ui.session import (
    LOGIN_PATH,
    LoginRequired,
    clear_session,
    renew_session,
    session_token,
    session_user,
)

DICOMWEB = MOUNT + "/dicom-web"
SESSION = MOUNT + "/session"
# Content-hashed names (app.bundle.0f6159c501addfe9.js, 34b1e6b1deb5828e.wasm) never
# change their bytes; the rest keeps a day.
_HASHED = re.compile(r"(^|[.-])[0-9a-f]{16,}\.[a-z0-9]+$")
IMMUTABLE = "public, max-age=31536000, immutable"
SHORT = "public, max-age=86400"
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.S)
# Cornerstone decodes in web workers and WebAssembly, and its SEG loader builds arrays
# with ndarray, which compiles code (new Function): OHIF's page needs 'unsafe-eval',
# JIP's own pages keep their strict policy. React sets inline styles.
_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-eval' 'wasm-unsafe-eval' {hashes}; "
    "worker-src 'self' blob:; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "font-src 'self' data:; connect-src 'self' data: blob:; object-src 'none'; "
    "base-uri 'self'; form-action 'self'; frame-ancestors 'self'"
)
PAGE_HEADERS = {
    "X-Frame-Options": "SAMEORIGIN",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
# The bearer guard never sees these, and DICOMweb gets the token from us instead.
_DROPPED = (b"authorization", b"cookie")
_ROUTING_KEYS = ("route", "endpoint", "path_params", "router", "state")


def ohif_settings(request: Request) -> OhifSettings:
    settings: OhifSettings = request.app.state.runtime.settings.ui.ohif
    return settings


def installed_dist(settings: OhifSettings) -> Path | None:
    """The viewer's files, or None when the site has it off or never fetched it."""
    if not settings.enabled or not is_installed(settings.dir):
        return None
    return dist_dir(settings.dir)


def viewer_link(study: str, series: str | None = None) -> str:
    """Where a study opens in OHIF (its default mode); ``series`` is shown first."""
    query = f"StudyInstanceUIDs={study}"
    if series:
        query += f"&initialSeriesInstanceUID={series}"
    return f"{MOUNT}/viewer?{query}"


def _not_installed(settings: OhifSettings) -> Response:
    if not settings.enabled:
        return PlainTextResponse("the OHIF viewer is switched off on this site", 404)
    body = (
        f"<!doctype html><title>Viewer not installed</title><p>The OHIF viewer {VERSION} is "
        "not installed on this site. The site admin installs it with <code>make install"
        "</code> (or <code>python -m jip.ui.ohif_fetch</code>); no restart is needed.</p>"
    )
    return HTMLResponse(body, 503, headers=PAGE_HEADERS)


def _login(request: Request) -> Response:
    """A missing or expired session: renewed from the refresh cookie, else the login."""
    renewed = renew_session(request)
    if renewed is not None:
        return renewed
    response = RedirectResponse(LOGIN_PATH, status_code=303)
    clear_session(response)
    return response


async def entry(request: Request) -> Response:
    """``/viewer``: OHIF's study list, or with ``StudyInstanceUIDs=`` the study itself
    (OHIF's routes live under its base ``/viewer/``)."""
    query = request.url.query
    target = f"{MOUNT}/viewer?{query}" if query else f"{MOUNT}/"
    return RedirectResponse(target, status_code=307)


def files(request: Request) -> Response:
    """A file of the viewer, else (a route of the single-page app) its index page.
    Synchronous: files and the session's token ledger are read in the thread pool."""
    settings = ohif_settings(request)
    dist = installed_dist(settings)
    if dist is None:
        return _not_installed(settings)
    name = str(request.path_params.get("path", ""))
    found = _file(dist, name)
    if found is not None:
        cache = IMMUTABLE if _HASHED.search(found.name) else SHORT
        return FileResponse(
            found, headers={"Cache-Control": cache, "X-Content-Type-Options": "nosniff"}
        )
    if "." in name.rsplit("/", 1)[-1]:
        return PlainTextResponse(f"no file {name!r} in the viewer", 404)
    try:
        session_user(request)
    except LoginRequired:
        return _login(request)
    index = dist / "index.html"
    html, hashes = _index(index, index.stat().st_mtime_ns)
    headers = {**PAGE_HEADERS, "Content-Security-Policy": _CSP.format(hashes=hashes)}
    return HTMLResponse(html, headers=headers)


def _file(dist: Path, name: str) -> Path | None:
    """``name`` inside ``dist`` and no hidden file; None for anything else."""
    if not name or any(part.startswith(".") for part in name.split("/")):
        return None
    candidate = (dist / name).resolve()
    if not candidate.is_relative_to(dist.resolve()) or not candidate.is_file():
        return None
    return candidate


@lru_cache(maxsize=4)
def _index(index: Path, _mtime_ns: int) -> tuple[str, str]:
    """The index page and the CSP hashes of its inline scripts (OHIF sets its public URL
    inline), read once per file version."""
    html = index.read_text()
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"
        for script in _INLINE_SCRIPT.findall(html)
    )
    return html, hashes


async def app_config(request: Request) -> Response:
    """OHIF's ``window.config``: one DICOMweb data source, the mount on this origin."""
    return Response(
        config_script(),
        media_type="text/javascript",
        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
    )


def config_script() -> str:
    config = {
        "routerBasename": MOUNT,
        "extensions": [],
        "modes": [],
        "showStudyList": True,
        "investigationalUseDialog": {"option": "never"},
        # No onboarding tour over the first image (it hides it on every new browser).
        "customizationService": [{"ohif.tours": {"$set": []}}],
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": True,
        "showLoadingIndicator": True,
        "maxNumberOfWebWorkers": 3,
        "defaultDataSourceName": "jip",
        "dataSources": [
            {
                "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
                "sourceName": "jip",
                "configuration": {
                    "friendlyName": "JIP",
                    "name": "jip",
                    "qidoSupportsIncludeField": True,
                    "imageRendering": "wadors",
                    "thumbnailRendering": "wadors",
                    "enableStudyLazyLoad": True,
                    "supportsFuzzyMatching": False,
                    "supportsWildcard": True,
                    "supportsReject": False,
                    "dicomUploadEnabled": False,
                    "singlepart": "bulkdata,video",
                    "bulkDataURI": {"enabled": True, "relativeResolution": "studies"},
                    "omitQuotationForMultipartRequest": True,
                },
            }
        ],
    }
    return f"""// Generated by JIP (jip.ui.ohif): OHIF reads this site's DICOMweb, read-only.
window.config = {json.dumps(config, indent=2)};
(function () {{
  const root = window.location.origin + {json.dumps(DICOMWEB)};
  for (const source of window.config.dataSources) {{
    Object.assign(source.configuration, {{ qidoRoot: root, wadoRoot: root, wadoUriRoot: root }});
  }}
  // An expired session: the page again, which renews it or asks for the login.
  window.config.httpErrorHandler = function (error) {{
    if (error && error.status === 401) window.location.reload();
  }};
  // Access tokens are short-lived: renew while the viewer is open (one request at a time).
  setInterval(function () {{
    fetch({json.dumps(SESSION)}, {{ credentials: "same-origin", cache: "no-store" }}).then(function (r) {{
      if (r.status === 401) window.location.reload();
    }});
  }}, 10000);
}})();
"""


def session(request: Request) -> Response:
    """204 while the session holds; renews an expired one (303 to itself with new
    cookies, which ``fetch`` follows); 401 when only a new login helps."""
    try:
        session_user(request)
    except LoginRequired:
        renewed = renew_session(request)
        if renewed is not None:
            return renewed
        return JSONResponse({"detail": "the session has ended: log in again"}, 401)
    return Response(status_code=204, headers={"Cache-Control": "no-store"})


class DicomWebMount:
    """``GET /viewer/dicom-web/...``: the site's DICOMweb with the session's token."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        refusal = self._refusal(request)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in _DROPPED]
        token = session_token(request)
        if token:
            headers.append((b"authorization", f"Bearer {token}".encode()))
        inner = {k: v for k, v in scope.items() if k not in _ROUTING_KEYS}
        # /viewer/dicom-web/x is /dicom-web/x under the root path /viewer: the routes
        # match as usual, and the URLs they return keep the /viewer prefix.
        inner.update(headers=headers, root_path=str(scope.get("root_path", "")) + MOUNT)
        await scope["app"](inner, receive, send)

    @staticmethod
    def _refusal(request: Request) -> Response | None:
        if request.method not in ("GET", "HEAD"):
            return JSONResponse(
                {"detail": "the viewer's DICOMweb is read-only: store through /dicom-web"},
                405,
                headers={"Allow": "GET, HEAD"},
            )
        # SameSite=Strict keeps other sites' requests cookie-less, but not those of a
        # sibling subdomain (same-site): only the viewer's own origin may read here.
        if request.headers.get("sec-fetch-site") in ("cross-site", "same-site"):
            return JSONResponse({"detail": "only the viewer on this origin may read here"}, 403)
        authenticator = request.app.state.runtime.identity.authenticator
        if authenticator.enabled and not session_token(request):
            return JSONResponse({"detail": "no session: log in at /ui/login"}, 401)
        return None


# Plain Starlette routes (not FastAPI's): each checks the session itself, see above.
_ALL = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]  # the mount names what it refuses
router = APIRouter(include_in_schema=False)
router.routes.extend(
    [
        Route(MOUNT, entry, methods=["GET"]),
        Route(MOUNT + "/app-config.js", app_config, methods=["GET"]),
        Route(SESSION, session, methods=["GET"]),
        Route(DICOMWEB, DicomWebMount(), methods=_ALL),
        Route(DICOMWEB + "/{path:path}", DicomWebMount(), methods=_ALL),
        Route(MOUNT + "/{path:path}", files, methods=["GET"]),
    ]
)
