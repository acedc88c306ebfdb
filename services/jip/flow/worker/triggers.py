"""Triggers: wait in Airflow's triggerer, not in a worker slot.

:class:`ReviewTrigger` asks the site's flow API whether a person marked one series of a
run done, every ``poll_s`` seconds, with one asyncio task per waiting series: a run
waiting days for its annotator costs no process. It asks with the run's own token, looked
up in the Airflow Connection ``token_conn_id`` when it starts (never stored in the
trigger table), else with the triggerer's ``JIP_API_TOKEN``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
from airflow.triggers.base import BaseTrigger, TriggerEvent

from jip.flow.worker.api_client import review_path


class ReviewTrigger(BaseTrigger):
    """Fires once ``GET /api/flow/runs/{run}/reviews/{series}`` says ``done``."""

    def __init__(
        self,
        *,
        api_url: str,
        run_id: str,
        series_uid: str,
        token_conn_id: str | None = None,
        poll_s: float = 5.0,
    ) -> None:
        super().__init__()
        self.api_url = api_url
        self.run_id = run_id
        self.series_uid = series_uid
        self.token_conn_id = token_conn_id
        self.poll_s = poll_s

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "api_url": self.api_url,
                "run_id": self.run_id,
                "series_uid": self.series_uid,
                "token_conn_id": self.token_conn_id,
                "poll_s": self.poll_s,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        path = review_path(self.run_id, self.series_uid)
        try:
            token = await self._token()
        except Exception as exc:  # the run's token is gone: the run ended or was cancelled
            yield TriggerEvent({"status": "error", "message": f"no token for {path}: {exc}"})
            return
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with httpx.AsyncClient(base_url=self.api_url, headers=headers, timeout=30) as client:
            while True:
                try:
                    response = await client.get(path)
                    if response.status_code == 200 and response.json().get("done"):
                        yield TriggerEvent({"status": "done", "review": response.json()})
                        return
                    if response.status_code in (401, 403, 404):
                        yield TriggerEvent(
                            {
                                "status": "error",
                                "message": f"{path}: {response.status_code} {response.text[:300]}",
                            }
                        )
                        return
                except (httpx.HTTPError, ValueError) as exc:
                    # The site restarts or is busy: keep waiting, as a person would.
                    self.log.warning("asking %s failed: %s", path, exc)
                await asyncio.sleep(self.poll_s)

    async def _token(self) -> str | None:
        if self.token_conn_id is None:
            from jip.config import get_settings

            api_token = get_settings().api_token
            return api_token.get_secret_value() if api_token else None
        from airflow.sdk import Connection

        password = (await Connection.async_get(self.token_conn_id)).password
        return str(password) if password else None
