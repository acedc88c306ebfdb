"""The UI's way to the site's own HTTP API: in-process calls with the session's token.

Pages call the same endpoints as every other client, so project scopes, validation and
the audit log apply to the browser exactly as to the CLI.
"""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import Request

from jip.errors import detail_of
from jip.ui.session import LoginRequired, session_token


class ApiError(Exception):
    """The API refused a call; the page shows ``detail`` with ``status``."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class Api:
    """Calls the application that serves ``request`` with the session's bearer token."""

    def __init__(self, request: Request) -> None:
        self.request = request
        token = session_token(request)
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def call(
        self, method: str, path: str, *, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        # The browser's address, so that the audit log records who called, not the UI.
        peer = self.request.client
        transport = httpx.ASGITransport(
            app=self.request.app, client=(peer.host, peer.port) if peer else ("", 0)
        )
        async with httpx.AsyncClient(transport=transport, base_url="http://ui.internal") as client:
            response = await client.request(
                method, path, headers={**self.headers, **(headers or {})}, **kwargs
            )
        if response.status_code == 401:
            raise LoginRequired
        if response.status_code >= 400:
            raise ApiError(response.status_code, detail_of(response))
        return response

    async def get(self, path: str, **kwargs: Any) -> Any:
        return (await self.call("GET", path, **kwargs)).json()

    async def post(self, path: str, **kwargs: Any) -> Any:
        response = await self.call("POST", path, **kwargs)
        return response.json() if response.content else None

    async def patch(self, path: str, **kwargs: Any) -> Any:
        return (await self.call("PATCH", path, **kwargs)).json()
