"""How workflow tasks talk to their site: DICOMweb for data, the flow API for bookkeeping.

Tasks run in Airflow's workers (embedded: processes beside `jip up`; cluster: pods of
Airflow's chart) and reach the site only through its HTTP API, at ``JIP_API_URL`` with
the bearer token ``JIP_API_TOKEN`` (both read by :class:`jip.config.Settings`; a run's
conf may carry its own token). In the cluster the store (DICOMweb, ``/api/store``) and
the flow API are separate Services: ``flow.api.store_url`` and ``flow.api.flow_url``
name them, so tasks and operator pods do not go out through the Ingress and back. One
mechanism for both shapes: a worker never needs the catalog's database or the DICOM
storage's or result store's credentials.

- get-input: QIDO-RS finds a series' study, WADO-RS (PS3.18 §10.4) streams its
  instances as ``multipart/related; type="application/dicom"`` in their stored transfer
  syntax (``transfer-syntax=*``), written byte for byte, one file per instance.
- put-output: STOW-RS (PS3.18 §10.5) stores DICOM results; ``/api/flow`` records them,
  and takes other files (``PUT /api/flow/runs/{run}/files/{name}``, streamed).
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pydicom

from jip.config import Settings, reachable_host
from jip.errors import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    Unauthorized,
    Unavailable,
    detail_of,
)
from jip.store import (
    Part,
    boundary_of,
    file_chunks,
    new_boundary,
    read_parts,
    write_parts,
)

log = logging.getLogger(__name__)

DICOM = "application/dicom"
ACCEPT_SERIES = f'multipart/related; type="{DICOM}"; transfer-syntax=*'
MAX_SERIES_BYTES = 64 * 1024**3
_FAILED_SOP_SEQUENCE = "00081198"
_FAILURE_REASON = "00081197"
_REFERENCED_SOP_INSTANCE_UID = "00081155"
_STUDY_INSTANCE_UID = "0020000D"


def local_api_url(settings: Settings) -> str:
    """The site's API on this machine (`jip up`'s own tasks): ``api_url`` or loopback."""
    if settings.api_url:
        return settings.api_url.rstrip("/")
    return f"http://{reachable_host(settings.http_host)}:{settings.http_port}"


def api_url_of(settings: Settings) -> str:
    """Where this process reaches the site's API: ``api_url`` or the site's own URL."""
    if settings.api_url:
        return settings.api_url.rstrip("/")
    from jip.base import site_url

    return site_url(settings)


def service_urls_of(settings: Settings) -> tuple[str, str]:
    """(store, flow): where tasks reach the store and the flow API; each falls back to
    :func:`api_url_of` (one API behind one address, as `jip up` and the Ingress serve it)."""
    api = settings.flow.api
    if api.store_url and api.flow_url:
        return api.store_url.rstrip("/"), api.flow_url.rstrip("/")
    default = api_url_of(settings)
    return (api.store_url or default).rstrip("/"), (api.flow_url or default).rstrip("/")


class JipClient:
    """A small synchronous client of one site's API; ``token`` is a bearer token.

    ``base_url`` serves DICOMweb and the store's API; ``flow_url`` (default: the same)
    the flow API, the paths under ``/api/flow``.
    """

    def __init__(
        self,
        base_url: str,
        *,
        flow_url: str | None = None,
        token: str | None = None,
        timeout_s: float = 120.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.flow_url = (flow_url or base_url).rstrip("/")
        self.token = token
        self.timeout_s = timeout_s
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout_s, transport=transport
        )
        self._flow = self._client
        if self.flow_url != self.base_url:
            self._flow = httpx.Client(
                base_url=self.flow_url, headers=headers, timeout=timeout_s, transport=transport
            )

    @classmethod
    def from_settings(cls, settings: Settings, *, token: str | None = None) -> JipClient:
        if token is None and settings.api_token is not None:
            token = settings.api_token.get_secret_value()
        store, flow = service_urls_of(settings)
        return cls(store, flow_url=flow, token=token)

    def close(self) -> None:
        self._client.close()
        if self._flow is not self._client:
            self._flow.close()

    def __enter__(self) -> JipClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- DICOMweb ------------------------------------------------------------------------

    def study_of(self, series_uid: str) -> str:
        """The StudyInstanceUID of a stored series (QIDO-RS)."""
        found = self._json(
            "GET",
            "/dicom-web/series",
            params={"SeriesInstanceUID": series_uid, "includefield": "StudyInstanceUID"},
            headers={"Accept": "application/dicom+json"},
            what=f"series {series_uid}",
        )
        for item in found or []:
            values = item.get(_STUDY_INSTANCE_UID, {}).get("Value") or []
            if values:
                return str(values[0])
        raise NotFound(f"series {series_uid} is not in the store at {self.base_url}")

    def fetch_series(self, series_uid: str, dest: Path, *, study_uid: str | None = None) -> Path:
        """Write every instance of the series to ``dest/<series_uid>/<SOPInstanceUID>.dcm``."""
        study = study_uid or self.study_of(series_uid)
        folder = dest / series_uid
        folder.mkdir(parents=True, exist_ok=True)
        path = f"/dicom-web/studies/{_seg(study)}/series/{_seg(series_uid)}"
        count = asyncio.run(self._fetch(path, folder, f"series {series_uid}"))
        log.info("series fetched", extra={"series_instance_uid": series_uid, "instances": count})
        return folder

    async def _fetch(self, path: str, folder: Path, what: str) -> int:
        headers = dict(self._client.headers) | {"Accept": ACCEPT_SERIES}
        spool = Path(tempfile.mkdtemp(dir=folder, prefix=".wado-"))
        try:
            async with (
                httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout_s) as client,
                client.stream("GET", path, headers=headers) as response,
            ):
                if response.status_code >= 400:
                    await response.aread()
                    _raise_for_status(response, what)
                boundary, _ = boundary_of(response.headers.get("content-type", ""))
                parts = await read_parts(response.aiter_bytes(), boundary, spool, MAX_SERIES_BYTES)
            for index, part in enumerate(parts, start=1):
                part.path.replace(folder / f"{_instance_name(part.path, index)}.dcm")
            return len(parts)
        except httpx.TransportError as exc:
            raise Unavailable(f"fetching {what} from {self.base_url} failed: {exc}") from exc
        finally:
            for leftover in spool.iterdir():
                leftover.unlink(missing_ok=True)
            spool.rmdir()

    def store_instances(self, paths: Sequence[Path]) -> int:
        """Store Part 10 files with STOW-RS, streamed; raises unless every one was stored."""
        if not paths:
            return 0
        boundary = new_boundary()
        parts = (Part(DICOM, file_chunks(p.open("rb"))) for p in paths)
        body = write_parts(parts, boundary)
        content_type = f'multipart/related; type="{DICOM}"; boundary={boundary}'
        try:
            response = self._client.post(
                "/dicom-web/studies",
                content=body,
                headers={"Content-Type": content_type, "Accept": "application/dicom+json"},
            )
        except httpx.TransportError as exc:
            raise Unavailable(f"storing results at {self.base_url} failed: {exc}") from exc
        failures = _stow_failures(response)
        if failures or response.status_code >= 400:
            detail = "; ".join(failures) or detail_of(response)
            raise Invalid(f"STOW-RS stored not all {len(paths)} result instances: {detail}")
        return len(paths)

    # -- flow bookkeeping ----------------------------------------------------------------

    def record_results(self, run_id: str, records: Sequence[Mapping[str, Any]]) -> list[Any]:
        if not records:
            return []
        answer = self._json(
            "POST",
            f"/api/flow/runs/{_seg(run_id)}/results",
            json={"results": list(records)},
            what=f"results of run {run_id}",
        )
        return list(answer or [])

    def upload_file(
        self, run_id: str, name: str, path: Path, *, series: str, operator: str
    ) -> dict[str, Any]:
        """Stream one result file to the run's folder of the result store, where the flow
        API records it (a FILE result of ``series``); the same name again replaces it."""
        size = path.stat().st_size
        url = f"/api/flow/runs/{_seg(run_id)}/files/{quote(name, safe='/')}"
        try:
            with path.open("rb") as handle:
                response = self._flow.put(
                    url,
                    content=file_chunks(handle),
                    params={"series": series, "operator": operator},
                    headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Length": str(size),
                    },
                )
        except httpx.TransportError as exc:
            raise Unavailable(f"uploading {name} to {self.flow_url} failed: {exc}") from exc
        _raise_for_status(response, f"result file {name} of run {run_id}")
        return dict(response.json())

    def results(self, run_id: str, *, series: str | None = None) -> list[dict[str, Any]]:
        params = {"series": series} if series else None
        answer = self._json(
            "GET", f"/api/flow/runs/{_seg(run_id)}/results", params=params, what=f"run {run_id}"
        )
        return list(answer or [])

    def review(self, run_id: str, series_uid: str) -> dict[str, Any]:
        answer = self._json(
            "GET",
            review_path(run_id, series_uid),
            what=f"review of series {series_uid} in run {run_id}",
        )
        return dict(answer or {})

    def _json(
        self,
        method: str,
        path: str,
        *,
        what: str,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        client = self._flow if path.startswith("/api/flow/") else self._client
        try:
            response = client.request(method, path, params=params, json=json, headers=headers)
        except httpx.TransportError as exc:
            raise Unavailable(f"JIP at {client.base_url} is not reachable ({exc})") from exc
        _raise_for_status(response, what)
        return response.json() if response.content else None


def review_path(run_id: str, series_uid: str) -> str:
    return f"/api/flow/runs/{_seg(run_id)}/reviews/{_seg(series_uid)}"


def _instance_name(path: Path, index: int) -> str:
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
        uid = str(header.get("SOPInstanceUID", ""))
    except Exception:  # the operator reports unreadable files; keep the bytes
        uid = ""
    return uid or f"instance-{index:06d}"


def _stow_failures(response: httpx.Response) -> list[str]:
    try:
        body = response.json()
    except ValueError:
        return []
    failures = []
    for item in (body or {}).get(_FAILED_SOP_SEQUENCE, {}).get("Value") or []:
        uid = (item.get(_REFERENCED_SOP_INSTANCE_UID, {}).get("Value") or ["?"])[0]
        reason = (item.get(_FAILURE_REASON, {}).get("Value") or ["?"])[0]
        failures.append(f"instance {uid}: failure reason {reason}")
    return failures


def _raise_for_status(response: httpx.Response, what: str) -> None:
    code = response.status_code
    if code < 400:
        return
    detail = detail_of(response)
    errors: dict[int, type[Exception]] = {
        400: Invalid,
        401: Unauthorized,
        403: Forbidden,
        404: NotFound,
        409: Conflict,
    }
    kind = errors.get(code, Invalid if code < 500 else Unavailable)
    raise kind(f"{what}: JIP answered {code}: {detail}")


def _seg(value: str) -> str:
    return quote(value, safe="")
