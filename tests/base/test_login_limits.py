"""Login limits under concurrency: attempts reserved before the hash, limits per user
across addresses and site-wide, a bounded number of hashes at once, password changes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from tests.base.support import PASSWORD, add_user, bearer, install_key, site_settings, tokens_for
from tests.support.servers import serve_in_thread

from jip.app import build_app
from jip.base import users as users_module
from jip.base.audit import AuditFilter
from jip.base.issuer import Issuer, OAuthError
from jip.base.throttle import TooManyAttempts
from jip.runtime import Runtime, build_runtime


@pytest.fixture
def make_site(tmp_path: Path, issuer_key: Path) -> Iterator[Callable[..., Runtime]]:
    built: list[Runtime] = []

    def make(**auth: Any) -> Runtime:
        settings = site_settings(tmp_path / f"data{len(built)}", **auth)
        install_key(settings, issuer_key)
        runtime = build_runtime(settings)
        built.append(runtime)
        return runtime

    yield make
    for runtime in built:
        runtime.close()


class SlowHashes:
    """check_password that takes ``delay_s`` and counts the hashes running at once."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, delay_s: float) -> None:
        self.real = users_module.check_password
        self.delay_s = delay_s
        self.lock = threading.Lock()
        self.running = self.most = self.calls = 0
        monkeypatch.setattr(users_module, "check_password", self)

    def __call__(self, password: str, encoded: str) -> bool:
        with self.lock:
            self.running += 1
            self.calls += 1
            self.most = max(self.most, self.running)
        try:
            time.sleep(self.delay_s)
            return self.real(password, encoded)
        finally:
            with self.lock:
                self.running -= 1


def login(base: str, username: str, password: str, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{base}/auth/token",
        data={
            "grant_type": "password",
            "client_id": "jip-cli",
            "username": username,
            "password": password,
        },
        headers=headers,
        timeout=60,
    )


def in_parallel(count: int, call: Callable[[int], httpx.Response]) -> list[int]:
    with ThreadPoolExecutor(max_workers=count) as pool:
        return sorted(r.status_code for r in pool.map(call, range(count)))


def test_parallel_wrong_passwords_get_at_most_the_limit_of_tries(
    make_site: Callable[..., Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = make_site(max_concurrent_password_hashes=32)
    add_user(runtime, "alice")
    hashes = SlowHashes(monkeypatch, delay_s=0.3)
    with serve_in_thread(build_app(runtime)) as base:
        codes = in_parallel(20, lambda _: login(base, "alice", "wrong-password"))
    limit = runtime.settings.auth.login_max_failures
    assert codes.count(400) <= limit, codes  # tried: a wrong password
    assert codes.count(429) >= 20 - limit, codes  # refused before hashing
    assert hashes.calls <= limit


def test_failures_from_many_addresses_lock_the_username(
    make_site: Callable[..., Runtime],
) -> None:
    runtime = make_site(login_max_failures_per_user=8)
    add_user(runtime, "alice")
    issuer = runtime.identity.issuer
    assert issuer is not None
    for n in range(8):
        with pytest.raises(OAuthError):
            grant(issuer, "alice", "wrong", f"10.0.0.{n}")
    with pytest.raises(TooManyAttempts, match="for this username"):
        grant(issuer, "alice", PASSWORD, "10.0.1.1")  # a fresh address, the right password


def test_spraying_many_usernames_hits_the_site_limit(make_site: Callable[..., Runtime]) -> None:
    runtime = make_site(login_max_failures_site=10)
    add_user(runtime, "alice")
    issuer = runtime.identity.issuer
    assert issuer is not None
    for n in range(10):
        with pytest.raises(OAuthError):
            grant(issuer, f"user{n}", "Winter2026!", f"10.0.0.{n}")
    with pytest.raises(TooManyAttempts, match="at this site"):
        grant(issuer, "user99", "Winter2026!", "10.0.9.9")
    refused = runtime.identity.audit.list(AuditFilter(action="login.throttled"))
    assert refused and refused[0].detail == {"limit": "at this site"}


def test_hashes_at_once_are_bounded_and_the_rest_get_503(
    make_site: Callable[..., Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = make_site(max_concurrent_password_hashes=2, password_hash_wait_s=0.2)
    for n in range(8):
        add_user(runtime, f"user{n}")
    hashes = SlowHashes(monkeypatch, delay_s=0.6)
    with serve_in_thread(build_app(runtime)) as base:
        responses: list[httpx.Response] = []
        with ThreadPoolExecutor(max_workers=8) as pool:
            responses = list(pool.map(lambda n: login(base, f"user{n}", PASSWORD), range(8)))
    codes = sorted(r.status_code for r in responses)
    assert hashes.most <= 2
    assert 200 in codes and 503 in codes, codes
    busy = next(r for r in responses if r.status_code == 503)
    assert int(busy.headers["retry-after"]) >= 1


def test_password_change_is_throttled_and_audited(make_site: Callable[..., Runtime]) -> None:
    runtime = make_site()
    add_user(runtime, "alice")
    client = TestClient(build_app(runtime))
    token = bearer(tokens_for(client, "alice")["access_token"])
    wrong = {"current_password": "guess", "new_password": "alices-new-password"}
    for _ in range(runtime.settings.auth.login_max_failures):
        assert client.put("/api/me/password", headers=token, json=wrong).status_code == 401
    right = {"current_password": PASSWORD, "new_password": "alices-new-password"}
    refused = client.put("/api/me/password", headers=token, json=right)
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) > 0
    failed = runtime.identity.audit.list(AuditFilter(action="user.password.failed"))
    assert len(failed) == runtime.settings.auth.login_max_failures
    assert {entry.username for entry in failed} == {"alice"}


def grant(issuer: Issuer, username: str, password: str, ip: str) -> Any:
    return issuer.password_grant(username, password, client_id="jip-cli", scope="", client_ip=ip)
