"""The researcher's link to the hub: HTTPS with the hub's CA pinned and a bearer token.

The hub has no long-poll for researchers, so following a job is polling
``GET /api/jobs/{id}`` every ``poll_s``; each change of a site's state becomes one
progress line (what `jip fed job submit --wait` prints on stderr).
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from typing import Any

import httpx

from jip.errors import Conflict, Forbidden, Invalid, NotFound, Unauthorized, Unavailable, detail_of
from jip.federation.protocol import JobSpec, RoundRequest, SiteResult
from jip.federation.requester.home import ResearcherHome

Progress = Callable[[str], None]
DEFAULT_POLL_S = 2.0
FINAL_STATES = {"done", "refused", "failed", "missed_deadline"}


def _quiet(_: str) -> None:
    """A progress sink that drops every line."""


def state_lines(before: dict[str, Any] | None, now: dict[str, Any]) -> list[str]:
    """One line per site whose state (or reason) changed between two hub statuses."""
    old = (before or {}).get("sites", {})
    lines = []
    for site, status in sorted(now.get("sites", {}).items()):
        seen = old.get(site, {})
        if (seen.get("state"), seen.get("reason")) != (status["state"], status.get("reason")):
            reason = f" ({status['reason']})" if status.get("reason") else ""
            lines.append(f"{site}: {status['state']}{reason}")
    return lines


class HubSession:
    """The hub's researcher API as this home's researcher (see the module docstring)."""

    def __init__(
        self,
        home: ResearcherHome,
        *,
        poll_s: float = DEFAULT_POLL_S,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.home, self.poll_s = home, poll_s
        self.base_url = home.hub_url
        context = ssl.create_default_context(cafile=str(home.ca))  # the hub's CA, no other
        self.http = httpx.Client(
            base_url=self.base_url,
            verify=context,
            headers={"Authorization": f"Bearer {home.token}"},
            timeout=httpx.Timeout(30.0),
            transport=transport,
        )

    def __enter__(self) -> HubSession:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise Unavailable(
                f"hub {self.base_url}: {type(exc).__name__}: {exc}; is the hub up, and is "
                f"{self.home.ca} its CA?"
            ) from exc
        code, detail = response.status_code, detail_of(response)
        if code == 401:
            raise Unauthorized(
                f"hub {self.base_url}: {detail}; renew the token (`jip fed researcher init`)"
            )
        errors: dict[int, type[Exception]] = {
            403: Forbidden,
            404: NotFound,
            409: Conflict,
            400: Invalid,
            422: Invalid,
        }
        if code in errors:
            raise errors[code](f"hub {self.base_url}: {path}: {detail}")
        if code >= 400:
            raise Unavailable(f"hub {self.base_url}: {path}: {detail} (HTTP {code})")
        return response

    # -- the API -------------------------------------------------------------------------
    def submit(self, spec: JobSpec) -> str:
        """Send the job to the hub (a retried submit of the same spec is harmless)."""
        body = self._call("POST", "/api/jobs", json=spec.model_dump(mode="json")).json()
        return str(body["id"])

    def status(self, job_id: str) -> dict[str, Any]:
        """The hub's view: ``spec``, ``sites`` (state per site), ``delivered``,
        ``missed_deadline``, ``k_reached``, ``finished``, ``deadline_passed``, ``rounds``."""
        body: dict[str, Any] = self._call("GET", f"/api/jobs/{job_id}").json()
        return body

    def results(self, job_id: str, round: int = 1) -> list[SiteResult]:
        """The sealed results of one round, one per site that sent it."""
        body = self._call("GET", f"/api/jobs/{job_id}/results", params={"round": round}).json()
        return [SiteResult.model_validate(r) for r in body]

    def site_keys(self) -> dict[str, str]:
        """The enrolled sites' X25519 box keys (site id → base64), as the hub lists them:
        later rounds are sealed to them. The hub is trusted for these keys (a site's
        admin can show its own to compare)."""
        body = self._call("GET", "/api/sites").json()
        return {str(s["site_id"]): str(s["box_key"]) for s in body if s.get("box_key")}

    def add_round(self, request: RoundRequest) -> None:
        """Queue a later round, sealed to the sites it asks (:func:`seal_round`)."""
        self._call(
            "POST", f"/api/jobs/{request.job_id}/rounds", json=request.model_dump(mode="json")
        )

    def wait(self, job_id: str, timeout_s: float, progress: Progress = _quiet) -> dict[str, Any]:
        """Poll until the hub says the job is finished (every site delivered, refused or
        failed, or the deadline passed; k of n is in ``k_reached``); returns that
        status. Unavailable after ``timeout_s`` without it."""
        return self.wait_until(job_id, lambda s: bool(s["finished"]), timeout_s, progress)

    def wait_until(
        self,
        job_id: str,
        ready: Callable[[dict[str, Any]], bool],
        timeout_s: float,
        progress: Progress = _quiet,
    ) -> dict[str, Any]:
        """Poll the job's status until ``ready(status)``, reporting state changes."""
        until = time.monotonic() + timeout_s
        last: dict[str, Any] | None = None
        while True:
            status = self.status(job_id)
            for line in state_lines(last, status):
                progress(line)
            last = status
            if ready(status):
                return status
            if time.monotonic() >= until:
                raise Unavailable(
                    f"job {job_id}: not finished after {timeout_s:g} s; follow it later "
                    f"with `jip fed job status {job_id}`"
                )
            time.sleep(self.poll_s)
