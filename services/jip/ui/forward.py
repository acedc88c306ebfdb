"""A browser's upload or download handed to the site's own API, streamed both ways.

:class:`jip.ui.api.Api` buffers what it sends and receives, which suits pages but not a
2 GB zip. :class:`Forward` instead runs the API route in the same ASGI call: the
browser's request body flows into it and its response body flows out to the browser as
they come, with the session's token as the bearer. The API's checks, scopes and audit
apply exactly as for any other client; the browser's address is kept for the audit.
"""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import Request, Response
from starlette.types import Receive, Scope, Send

from jip.ui.session import LoginRequired, session_token

# What the API call keeps of the browser's request; cookies stay behind.
_KEPT_HEADERS = {b"content-type", b"content-length", b"transfer-encoding", b"accept", b"user-agent"}
_SCOPE_KEYS = ("type", "asgi", "http_version", "method", "scheme", "server", "client", "state")


class Forward(Response):
    """A response that is the API's answer to the same request made to ``path``."""

    def __init__(self, request: Request, path: str, params: dict[str, str]) -> None:
        super().__init__()
        token = session_token(request)
        if token is None and request.app.state.runtime.settings.auth.enabled:
            raise LoginRequired
        self.app = request.app
        self.path = path
        self.query = urlencode(params).encode()
        self.bearer = f"Bearer {token}".encode() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(k, v) for k, v in scope["headers"] if k in _KEPT_HEADERS]
        if self.bearer is not None:
            headers.append((b"authorization", self.bearer))
        inner = {key: scope[key] for key in _SCOPE_KEYS if key in scope}
        inner.update(
            path=self.path,
            raw_path=self.path.encode(),
            root_path="",
            query_string=self.query,
            headers=headers,
        )
        await self.app(inner, receive, send)
