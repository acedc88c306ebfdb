"""What every HTTP request passes before a route: proxy-header trust, the body cap, and
who may read ``/metrics`` (:class:`MetricsGate`).

Proxy headers (``Forwarded``, ``X-Forwarded-*``) say who the client is and which URL it
used. They are believed only when the direct peer is one of ``http.trusted_proxies``
(DESIGN.md, "Trust boundaries"): from a trusted proxy, uvicorn's proxy-headers
middleware sets the client address and scheme, and the host and prefix headers stay for
the URLs DICOMweb returns; from anyone else every such header is removed, so no route,
throttle, audit entry or returned URL ever sees a caller's invention.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from jip import metrics

log = logging.getLogger(__name__)

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
# Raw bodies streamed only where a route spools them under its own limit
# (flow.api.max_file_bytes): an operator pod's result file.
STREAMED_RAW_PATHS = re.compile(r"^/api/flow/runs/[^/]+/files/.+")


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
        if media_type == "application/octet-stream":
            return bool(STREAMED_RAW_PATHS.match(scope.get("path", "")))
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


METRICS_PATH = "/metrics"
# Present only when a trusted proxy forwarded the request (TrustedProxies strips them
# from anyone else): such a caller came through the Ingress, never "from the network".
FORWARDED = (b"x-forwarded-for", b"forwarded")


class MetricsGate:
    """Who may read ``/metrics``: safe by default, nobody from the network.

    Admitted: a loopback client, or one with no network address at all (a unix socket,
    an in-process client); a direct (not proxied) client in ``metrics.allow``; anyone
    with ``Authorization: Bearer <the token in metrics.token_file>``. The token file is
    read on every scrape, so a rotated Secret counts without a restart.
    """

    def __init__(self, *, allow: Sequence[str], token_file: Path | None) -> None:
        self.networks: list[Network] = [ipaddress.ip_network(a, strict=False) for a in allow]
        self.token_file = token_file

    def admits(self, scope: Scope) -> bool:
        if not any(k in FORWARDED for k, _v in scope.get("headers", [])):
            host = str((scope.get("client") or ("", 0))[0])
            try:
                address = ipaddress.ip_address(host)
            except ValueError:  # no network peer
                return True
            if address.is_loopback or any(address in n for n in self.networks):
                return True
        return self._token_matches(_header(scope, b"authorization"))

    def _token_matches(self, authorization: str) -> bool:
        scheme, _, given = authorization.partition(" ")
        if self.token_file is None or scheme.lower() != "bearer" or not given.strip():
            return False
        try:
            expected = self.token_file.read_text().strip()
        except OSError as exc:
            log.warning("cannot read metrics.token_file %s: %s", self.token_file, exc)
            return False
        return bool(expected) and hmac.compare_digest(given.strip().encode(), expected.encode())

    async def refuse(self, scope: Scope, send: Send) -> None:
        detail = (
            "/metrics is served to loopback clients only: scrape from a network in "
            "metrics.allow, or send the bearer token of metrics.token_file"
        )
        await JSONResponse({"detail": detail}, status_code=403)(scope, _no_receive, send)


def _gate_of(scope: Scope) -> MetricsGate:
    """The gate of the app serving ``scope``, built once from its settings."""
    state = scope["app"].state
    gate = getattr(state, "metrics_gate", None)
    if not isinstance(gate, MetricsGate):
        settings = getattr(getattr(state, "runtime", None), "settings", None)
        config = getattr(settings, "metrics", None)
        gate = MetricsGate(
            allow=getattr(config, "allow", []), token_file=getattr(config, "token_file", None)
        )
        state.metrics_gate = gate
    return gate


class RequestMetrics:
    """ASGI middleware: each HTTP request's latency by route template, and the gate of
    ``/metrics`` (:class:`MetricsGate`; every app has this middleware, every role serves
    ``/metrics``, so the gate holds for all of them).

    The route template (``/api/runs/{run_id}``), not the URL, keeps the number of
    series bounded; a request no route matched counts as ``unmatched``.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] == METRICS_PATH and not _gate_of(scope).admits(scope):
            await _gate_of(scope).refuse(scope, send)
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
