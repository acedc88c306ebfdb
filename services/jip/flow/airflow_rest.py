"""Airflow 3's REST API (v2) as one signed-in user: the token, paging, errors, paths.

JIP signs in with the simple auth manager's token endpoint (``POST /auth/token``) and
sends the JWT as a bearer token; when Airflow refuses it (401 when expired, 403 "Invalid
JWT token" when Airflow signs with a new key) it fetches a new token once and repeats the
request. Airflow's answers become `jip.errors`: 404 NotFound, 400/422 Invalid, 409
Conflict, and no connection, 5xx or rejected credentials Unavailable. What the answers
mean for JIP (runs, task instances, their states) is :mod:`jip.flow.engine_airflow`'s.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

import httpx

from jip.errors import Conflict, Invalid, NotFound, Unavailable, detail_of

TOKEN_PATH = "/auth/token"
HEALTH_PATH = "/api/v2/monitor/health"
# Airflow's largest page ([api] maximum_page_limit).
_PAGE = 100

Password = str | Callable[[], str | None]


class AirflowRest:
    """One Airflow API server as one user; safe to share between threads."""

    def __init__(
        self,
        base_url: str,
        *,
        username: str,
        password: Password,
        timeout_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        # ``password`` may be a callable: the embedded Airflow's password is only
        # written when `jip up` starts it, possibly after this object is built.
        self.base_url = base_url.rstrip("/")
        self.username = username
        self.password = password
        self._client = httpx.Client(base_url=self.base_url, timeout=timeout_s, transport=transport)
        self._token: str | None = None
        self._token_lock = threading.Lock()

    def close(self) -> None:
        self._client.close()

    def health(self) -> Any:
        """The health endpoint's answer (it needs no token)."""
        try:
            response = self._client.get(HEALTH_PATH)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        _raise_for_status(response, "Airflow health")
        return response.json()

    def call(
        self,
        method: str,
        path: str,
        *,
        what: str,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        token = self._current_token()
        busy_left = BUSY_RETRIES if method.upper() in IDEMPOTENT else 0
        refreshed = False
        while True:
            try:
                response = self._client.request(
                    method,
                    path,
                    params=params,
                    json=json,
                    headers={**(headers or {}), "Authorization": f"Bearer {token}"},
                )
            except httpx.TransportError as exc:
                raise self._unreachable(exc) from exc
            if _database_busy(response) and busy_left:
                # The embedded Airflow's SQLite answers "database is locked" as a 500
                # while its scheduler writes; an idempotent request may simply go again.
                busy_left -= 1
                time.sleep(BUSY_PAUSE_S)
            elif _token_refused(response) and not refreshed:
                refreshed = True
                token = self._current_token(stale=token)
            else:
                break
        if _token_refused(response):
            raise Unavailable(
                f"Airflow at {self.base_url} rejects the token of user {self.username!r}; "
                "check flow.airflow_username and flow.airflow_password"
            )
        _raise_for_status(response, what)
        return response.json() if response.content else None

    def paged(
        self,
        path: str,
        key: str,
        params: Mapping[str, Any],
        *,
        what: str,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        while limit is None or len(items) < limit:
            page = _PAGE if limit is None else min(_PAGE, limit - len(items))
            answer = self.call(
                "GET", path, params={**params, "limit": page, "offset": len(items)}, what=what
            )
            batch = answer.get(key) or []
            items.extend(batch)
            total = answer.get("total_entries")
            if len(batch) < page or (total is not None and len(items) >= total):
                break
        return items

    def _current_token(self, stale: str | None = None) -> str:
        """The token to send; a new one when there is none or ``stale`` was refused."""
        with self._token_lock:
            if self._token is None or self._token == stale:
                self._token = self._fetch_token()
            return self._token

    def _fetch_token(self) -> str:
        password = self.password() if callable(self.password) else self.password
        if not password:
            raise Unavailable(
                f"no password for Airflow user {self.username!r}: set flow.airflow_password "
                "or start the embedded Airflow with `jip up`"
            )
        try:
            response = self._client.post(
                TOKEN_PATH, json={"username": self.username, "password": password}
            )
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        if response.status_code in (400, 401, 403):
            raise Unavailable(
                f"Airflow at {self.base_url} refused user {self.username!r} "
                f"({response.status_code}); check flow.airflow_username and "
                "flow.airflow_password"
            )
        _raise_for_status(response, "Airflow token")
        token = response.json().get("access_token")
        if not isinstance(token, str):
            raise Unavailable(f"Airflow at {self.base_url} answered {TOKEN_PATH} without a token")
        return token

    def _unreachable(self, exc: httpx.TransportError) -> Unavailable:
        if isinstance(exc, httpx.NetworkError | httpx.TimeoutException):
            return Unavailable(
                f"Airflow at {self.base_url} is not reachable ({type(exc).__name__}: {exc}); "
                "is Airflow running? `jip status`"
            )
        return Unavailable(f"talking to Airflow at {self.base_url} failed: {exc}")


# Requests that may be sent again unchanged: setting a task's state twice sets it once.
IDEMPOTENT = frozenset({"GET", "PUT", "PATCH", "DELETE"})
BUSY_RETRIES = 3
BUSY_PAUSE_S = 0.5


def _database_busy(response: httpx.Response) -> bool:
    """Airflow's answer when its metadata database could not take the request now."""
    return response.status_code == 500 and "Database error" in response.text


def _token_refused(response: httpx.Response) -> bool:
    # Expired: 401. Signed with another key (Airflow's jwt_secret changed): 403.
    if response.status_code == 401:
        return True
    return response.status_code == 403 and detail_of(response) == "Invalid JWT token"


def _raise_for_status(response: httpx.Response, what: str) -> None:
    code = response.status_code
    if code < 400:
        return
    detail = detail_of(response)
    if code == 404:
        raise NotFound(f"{what} not found: {detail}")
    if code in (400, 422):
        raise Invalid(f"{what}: {detail}")
    if code == 409:
        raise Conflict(f"{what}: {detail}")
    if code == 403:
        raise Unavailable(f"Airflow forbids this to JIP's user ({what}): {detail}")
    raise Unavailable(f"Airflow answered {code} for {what}: {detail}")


def seg(value: str) -> str:
    # Run ids hold ':' and '+' (manual__2026-01-01T00:00:00+00:00); quote every one.
    return quote(value, safe="")


def dag_path(dag_id: str) -> str:
    return f"/api/v2/dags/{seg(dag_id)}"


def run_path(dag_id: str, run_id: str) -> str:
    return f"{dag_path(dag_id)}/dagRuns/{seg(run_id)}"


def ti_path(dag_id: str, run_id: str, task_id: str, map_index: int) -> str:
    return f"{run_path(dag_id, run_id)}/taskInstances/{seg(task_id)}/{map_index}"


def run_what(dag_id: str, run_id: str) -> str:
    return f"run {run_id!r} of workflow {dag_id!r}"


def ti_what(dag_id: str, run_id: str, task_id: str, map_index: int) -> str:
    index = f"[{map_index}]" if map_index >= 0 else ""
    return f"task {task_id}{index} of run {run_id!r} of workflow {dag_id!r}"
