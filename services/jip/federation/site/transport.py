"""The site's only link to the hub: HTTPS out, mutual TLS, the hub's CA pinned.

The site never listens: it long-polls ``GET /api/site/jobs`` and posts acks, states and
sealed results. :class:`Backoff` spaces reconnections (exponential with full jitter, so
that many sites do not hammer a hub that comes back, all at the same instant).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import httpx

from jip.errors import Conflict, Forbidden, Unavailable, detail_of
from jip.federation.protocol import JobSpec, RoundRequest, SiteJobStatus, SiteResult
from jip.federation.site.files import SiteFiles

MAX_WAIT_S = 30


@dataclass
class Backoff:
    """Delays after consecutive failures: uniform in [0, min(cap, base·2ⁿ)]."""

    base_s: float = 1.0
    cap_s: float = 60.0
    failures: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def next_delay(self) -> float:
        ceiling = min(self.cap_s, self.base_s * 2**self.failures)
        self.failures += 1
        return self.rng.uniform(0, ceiling)

    def reset(self) -> None:
        self.failures = 0


class HubClient:
    """The hub's site API over mutual TLS (the client certificate names this site)."""

    def __init__(self, files: SiteFiles, *, transport: httpx.BaseTransport | None = None) -> None:
        hub = files.hub()
        self.base_url, self.site_id = str(hub["hub_url"]), str(hub["site_id"])
        self.http = httpx.Client(
            base_url=self.base_url,
            verify=files.ssl_context(),
            timeout=httpx.Timeout(10.0, read=MAX_WAIT_S + 15.0),
            transport=transport,
        )

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise Unavailable(f"hub {self.base_url}: {type(exc).__name__}: {exc}") from exc
        if response.status_code in (401, 403):
            raise Forbidden(f"hub {self.base_url} refused {path}: {detail_of(response)}")
        if response.status_code == 409:
            raise Conflict(f"hub {self.base_url}: {path}: {detail_of(response)}")
        if response.status_code >= 400:
            raise Unavailable(
                f"hub {self.base_url}: {path}: {detail_of(response)} (HTTP {response.status_code})"
            )
        return response

    def poll(self, wait_s: float) -> tuple[list[JobSpec], list[RoundRequest]]:
        """What the hub has for this site and this site has not acknowledged yet."""
        wait = max(0, min(int(wait_s), MAX_WAIT_S))
        body = self._call("GET", "/api/site/jobs", params={"wait": wait}).json()
        jobs = [JobSpec.model_validate(j) for j in body.get("jobs", [])]
        rounds = [RoundRequest.model_validate(r) for r in body.get("rounds", [])]
        return jobs, rounds

    def ack(self, job_id: str, round: int = 1) -> None:
        """The round is persisted here: the hub stops sending it (round 1: the job)."""
        params = {"round": round} if round > 1 else None
        self._call("POST", f"/api/site/jobs/{job_id}/ack", params=params)

    def state(self, status: SiteJobStatus) -> None:
        self._call(
            "POST", f"/api/site/jobs/{status.job_id}/state", json=status.model_dump(mode="json")
        )

    def result(self, result: SiteResult) -> None:
        self._call(
            "POST", f"/api/site/jobs/{result.job_id}/results", json=result.model_dump(mode="json")
        )

    def close(self) -> None:
        self.http.close()
