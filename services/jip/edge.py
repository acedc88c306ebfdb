"""What every HTTP request passes before a route: proxy-header trust and the body cap.

Proxy headers (``Forwarded``, ``X-Forwarded-*``) say who the client is and which URL it
used. They are believed only when the direct peer is one of ``http.trusted_proxies``
(DESIGN.md, "Trust boundaries"): from a trusted proxy, uvicorn's proxy-headers
middleware sets the client address and scheme, and the host and prefix headers stay for
the URLs DICOMweb returns; from anyone else every such header is removed, so no route,
throttle, audit entry or returned URL ever sees a caller's invention.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Sequence
from typing import Any, cast

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from jip import metrics

PROXY_HEADERS = frozenset(
    {
        b"forwarded",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-port",
        b"x-forwarded-prefix",
    }
)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    """ASGI middleware: proxy headers from ``trusted`` peers (IPs or CIDRs) only."""

    def __init__(self, app: ASGIApp, *, trusted: Sequence[str]) -> None:
        self.app = app
        self.networks: list[Network] = [ipaddress.ip_network(t, strict=False) for t in trusted]
        # uvicorn types ASGI apps its own way; the callables are the same.
        self.proxied: ASGIApp | None = (
            cast(ASGIApp, ProxyHeadersMiddleware(cast(Any, app), trusted_hosts=list(trusted)))
            if trusted
            else None
        )

    def trusts(self, peer: str) -> bool:
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:  # a unix socket or a test client: no address to trust
            return False
        return any(address in network for network in self.networks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        peer = str((scope.get("client") or ("", 0))[0])
        if self.proxied is not None and self.trusts(peer):
            await self.proxied(scope, receive, send)
            return
        headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() not in PROXY_HEADERS]
        await self.app({**scope, "headers": headers}, receive, send)


# Bodies that stream to disk with limits of their own (store.max_upload_bytes, the
# multipart parser's): STOW-RS and file uploads.
STREAMED_BODIES = ("multipart/related", "multipart/form-data", "application/dicom")


class BodyLimit:
    """ASGI middleware: a JSON, form or other small body over ``max_bytes`` is a 413.

    Checked on Content-Length first, then on the bytes that arrive (chunked bodies);
    the body is read before the route runs and handed on unchanged.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._streamed(scope):
            await self.app(scope, receive, send)
            return
        length = _header(scope, b"content-length")
        if length.isdigit() and int(length) > self.max_bytes:
            await self._too_large(scope, send)
            return
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                await self.app(scope, _replay([message], receive), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(scope, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay([body], receive), send)

    @staticmethod
    def _streamed(scope: Scope) -> bool:
        media_type = _header(scope, b"content-type").split(";")[0].strip().lower()
        return media_type in STREAMED_BODIES

    async def _too_large(self, scope: Scope, send: Send) -> None:
        detail = (
            f"request body is larger than {self.max_bytes} bytes (http.max_json_body_bytes):"
            " send less, or ask the site admin to raise the limit"
        )
        response = JSONResponse(
            {"detail": detail}, status_code=413, headers={"Connection": "close"}
        )
        await response(scope, _no_receive, send)


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return ""


def _replay(messages: list[Message], receive: Receive) -> Receive:
    async def replayed() -> Message:
        if messages:
            return messages.pop(0)
        message: Message = await receive()
        return message

    return replayed


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


class RequestMetrics:
    """ASGI middleware: each HTTP request's latency by route template (``/metrics``).

    The route template (``/api/runs/{run_id}``), not the URL, keeps the number of
    series bounded; a request no route matched counts as ``unmatched``.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def noted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, noted)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            metrics.HTTP_SECONDS.labels(route, scope["method"], str(status)).observe(
                time.perf_counter() - started
            )
