"""Serving the hub over HTTPS with optional client certificates (uvicorn).

TLS asks every client for a certificate and verifies one against the hub's CA when it
is sent (``CERT_OPTIONAL``: enrolment and researchers come without one); the routes of
sites then require it. The installed uvicorn does not put the peer certificate in the
ASGI scope, so :class:`PeerCertProtocol` reads it from the TLS transport once per
connection and passes it to the app as the ASGI TLS extension
(``scope["extensions"]["tls"]["client_cert_chain"]``), which is where the app looks.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from jip.federation.hub.app import ASGIApp, Scope, create_app
from jip.federation.hub.home import Hub

TIMEOUT_KEEP_ALIVE_S = 40  # above the longest long-poll, so polls reuse their connection
GRACEFUL_SHUTDOWN_S = 5  # long-polls in flight do not hold a stopping hub for 30 s


def _with_peer_cert(app: ASGIApp, pem: str | None) -> ASGIApp:
    async def wrapped(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] in {"http", "websocket"}:
            scope = dict(scope)
            extensions = dict(scope.get("extensions") or {})
            extensions["tls"] = {
                **(extensions.get("tls") or {}),
                "client_cert_chain": [pem] if pem else [],
            }
            scope["extensions"] = extensions
        await app(scope, receive, send)

    return wrapped


class PeerCertProtocol(H11Protocol):
    """uvicorn's h11 protocol, handing the verified client certificate to the app."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        pem = None
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            der = ssl_object.getpeercert(binary_form=True)
            if der:
                pem = ssl.DER_cert_to_PEM_cert(der)
        # Always wrapped, so a scope never carries a certificate the transport did not.
        self.app = _with_peer_cert(self.app, pem)


def server_config(hub: Hub, host: str, port: int, **kwargs: Any) -> uvicorn.Config:
    """uvicorn's config for the hub: HTTPS, client certificates from the hub's CA."""
    options: dict[str, Any] = {
        "timeout_keep_alive": TIMEOUT_KEEP_ALIVE_S,
        "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_S,
        "lifespan": "off",
        **kwargs,
    }
    return uvicorn.Config(
        create_app(hub),
        host=host,
        port=port,
        http=PeerCertProtocol,
        ssl_certfile=str(hub.paths.server_cert),
        ssl_keyfile=str(hub.paths.server_key),
        ssl_ca_certs=str(hub.paths.ca_cert),
        ssl_cert_reqs=ssl.CERT_OPTIONAL,
        **options,
    )


def serve(hub: Hub, host: str, port: int) -> None:
    """Serve the hub until interrupted."""
    uvicorn.Server(server_config(hub, host, port)).run()
