"""The client address is the connection's unless a trusted proxy says otherwise.

Served by uvicorn with the settings `jip up` uses (:func:`jip.embedded.http_server_config`),
so the addresses come from real sockets.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.types import Receive, Scope, Send
from tests.base.support import PASSWORD, add_user, install_key, site_settings
from tests.support.network import free_port

from jip.app import build_app
from jip.base.audit import AuditFilter
from jip.config import HttpSettings, Settings
from jip.edge import TrustedProxies
from jip.embedded import http_server_config
from jip.runtime import Runtime, build_runtime


@contextmanager
def jip_http(settings: Settings, runtime: Runtime) -> Iterator[str]:
    """The site's API served as `jip up` serves it, on a free loopback port."""
    settings = settings.model_copy(update={"http_host": "127.0.0.1", "http_port": free_port()})
    server = uvicorn.Server(http_server_config(settings, build_app(runtime)))
    server.config.lifespan = "off"
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{settings.http_port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture
def site(tmp_path: Path, issuer_key: Path) -> Iterator[Any]:
    def make(**http: Any) -> tuple[Settings, Runtime]:
        settings = site_settings(tmp_path / "data").model_copy(
            update={"http": HttpSettings(**http)}
        )
        install_key(settings, issuer_key)
        runtime = build_runtime(settings)
        add_user(runtime, "alice")
        made.append(runtime)
        return settings, runtime

    made: list[Runtime] = []
    yield make
    for runtime in made:
        runtime.close()


def wrong_login(base: str, forwarded_for: str) -> httpx.Response:
    return httpx.post(
        f"{base}/auth/token",
        data={
            "grant_type": "password",
            "client_id": "jip-cli",
            "username": "alice",
            "password": "not-" + PASSWORD,
        },
        headers={"X-Forwarded-For": forwarded_for},
        timeout=30,
    )


def test_forwarded_for_from_an_untrusted_peer_is_ignored(site: Any) -> None:
    """Only 10.9.9.9 is a proxy: a caller on loopback cannot invent addresses."""
    settings, runtime = site(trusted_proxies=["10.9.9.9"])
    limit = settings.auth.login_max_failures
    with jip_http(settings, runtime) as base:
        codes = [wrong_login(base, f"203.0.113.{n}").status_code for n in range(limit + 1)]
    assert codes == [400] * limit + [429]  # a new header per try bypasses nothing
    failed = runtime.identity.audit.list(AuditFilter(action="login.failed"))
    assert {entry.client_ip for entry in failed} == {"127.0.0.1"}


def test_no_trusted_proxy_at_all(site: Any) -> None:
    settings, runtime = site(trusted_proxies=[])
    with jip_http(settings, runtime) as base:
        wrong_login(base, "203.0.113.7")
    failed = runtime.identity.audit.list(AuditFilter(action="login.failed"))
    assert [entry.client_ip for entry in failed] == ["127.0.0.1"]


def test_a_trusted_proxy_names_the_client(site: Any) -> None:
    """The default trusts a reverse proxy on this machine (loopback) and nothing else."""
    settings, runtime = site()
    assert settings.http.trusted_proxies == ["127.0.0.1", "::1"]
    with jip_http(settings, runtime) as base:
        wrong_login(base, "198.51.100.4")
    failed = runtime.identity.audit.list(AuditFilter(action="login.failed"))
    assert [entry.client_ip for entry in failed] == ["198.51.100.4"]


def test_the_server_never_trusts_every_peer_by_default() -> None:
    """uvicorn believes no proxy header itself: the app judges them (jip.edge)."""
    config = http_server_config(Settings(), app=None)  # type: ignore[arg-type]
    assert config.proxy_headers is False


def test_proxy_headers_from_an_untrusted_peer_never_reach_a_route() -> None:
    seen: list[list[tuple[bytes, bytes]]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(list(scope["headers"]))

    guard = TrustedProxies(app, trusted=["10.0.0.0/8"])
    headers = [
        (b"x-forwarded-host", b"evil.example"),
        (b"forwarded", b"for=1.2.3.4"),
        (b"accept", b"*/*"),
    ]
    for peer in ("192.0.2.7", "testclient"):
        scope = {"type": "http", "client": (peer, 1234), "headers": headers}
        asyncio.run(guard(scope, _nothing, _nothing))  # type: ignore[arg-type]
    assert seen == [[(b"accept", b"*/*")], [(b"accept", b"*/*")]]
    assert guard.trusts("10.1.2.3") and not guard.trusts("11.0.0.1")


async def _nothing(*_: object) -> None:
    return None
