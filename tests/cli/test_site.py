"""Which site and which token every `jip` command uses (:mod:`jip.cli.site`).

Two stand-in sites, A and B, served on real sockets, record each request's path and
bearer token. The order under test: ``--url`` -> ``JIP_API_URL`` -> the stored login's
site -> the running site's state file -> the site's own URL; the token:
``JIP_API_TOKEN`` -> the stored login's, sent only to its own site.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import click
import httpx
import pytest
from click.testing import CliRunner, Result
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from tests.support.servers import serve_in_thread

from jip.cli.main import _register, cli
from jip.cli.site import SiteClient, same_site
from jip.config import reachable_host

_register()

SEARCH = ["cohort", "search", "{}", "--json"]
RUNS = ["flow", "runs", "--json"]
PROJECTS = ["project", "list", "--json"]


@dataclass
class FakeSite:
    """A site that answers the few calls under test and records who asked what."""

    name: str
    url: str = ""
    seen: list[tuple[str, str | None]] = field(default_factory=list)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.middleware("http")
        async def record(request: Request, call_next):  # type: ignore[no-untyped-def]
            self.seen.append((request.url.path, request.headers.get("authorization")))
            return await call_next(request)

        @app.get("/.well-known/openid-configuration")
        def discovery() -> dict[str, str]:
            return {"token_endpoint": f"{self.url}/auth/token"}

        @app.post("/auth/token")
        def token() -> dict[str, object]:
            return {"access_token": f"token-{self.name}", "expires_in": 3600}

        @app.post("/api/meta/search")
        def search() -> dict[str, object]:
            return {"total": 0, "hits": [], "aggregations": {}}

        @app.get("/api/flow/runs")
        def runs() -> list[object]:
            return []

        @app.get("/api/projects")
        def projects(request: Request) -> JSONResponse:
            if request.headers.get("authorization") is None:
                return JSONResponse({"detail": "missing bearer token"}, status_code=401)
            return JSONResponse([{"name": "liver", "description": "", "members": {}}])

        return app

    def tokens(self) -> list[str | None]:
        """The bearer tokens of the API calls (not the login's own)."""
        return [auth for path, auth in self.seen if path.startswith("/api/")]


@pytest.fixture(scope="module")
def sites() -> Iterator[dict[str, FakeSite]]:
    a, b = FakeSite("a"), FakeSite("b")
    with serve_in_thread(a.app()) as a.url, serve_in_thread(b.app()) as b.url:
        yield {"a": a, "b": b}


@pytest.fixture
def jip(sites: dict[str, FakeSite], tmp_path: Path) -> Callable[..., Result]:
    """``jip(*args, **env)`` with a data dir and a config dir (the token) of this test."""
    for site in sites.values():
        site.seen.clear()
    base_env = {
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "JIP_API_URL": None,
        "JIP_API_TOKEN": None,
        "JIP_CONFIG": None,
        "JIP_AUTH__PUBLIC_URL": None,
    }

    def run(*args: str, stdin: str | None = None, **env: str) -> Result:
        argv = ["--data-dir", str(tmp_path / "data"), *args]
        return CliRunner().invoke(cli, argv, input=stdin, env={**base_env, **env})

    return run


def _login(jip: Callable[..., Result], *args: str) -> Result:
    result = jip("login", *args, "-u", "alice", "--password-stdin", stdin="secret\n")
    assert result.exit_code == 0, result.output
    return result


def _run_here(tmp_path: Path, url: str) -> None:
    """The state file `jip up` writes, for a site listening on every address."""
    state = tmp_path / "data" / "jip-up.json"
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_text(json.dumps({"http": url.replace("127.0.0.1", "0.0.0.0")}))


def test_a_stored_login_sends_cohort_flow_and_project_commands_to_its_site(
    sites: dict[str, FakeSite], jip: Callable[..., Result], tmp_path: Path
) -> None:
    a, b = sites["a"], sites["b"]
    _login(jip, "--url", a.url)
    _run_here(tmp_path, b.url)  # the login's site comes before the running one
    for command in (SEARCH, RUNS, PROJECTS):
        result = jip(*command)
        assert result.exit_code == 0, result.output
    assert a.tokens() == ["Bearer token-a"] * 3
    assert b.seen == []


def test_the_url_flag_and_jip_api_url_win_over_the_stored_login(
    sites: dict[str, FakeSite], jip: Callable[..., Result]
) -> None:
    a, b = sites["a"], sites["b"]
    _login(jip, "--url", a.url)
    for command in (SEARCH, RUNS):
        assert jip(*command, "--url", b.url).exit_code == 0
        assert jip(*command, JIP_API_URL=b.url).exit_code == 0
    assert len(b.tokens()) == 4 and a.tokens() == []
    assert b.tokens() == [None] * 4  # site A's token never goes to site B


def test_a_login_to_another_site_is_named_when_this_one_wants_a_token(
    sites: dict[str, FakeSite], jip: Callable[..., Result]
) -> None:
    a, b = sites["a"], sites["b"]
    _login(jip, "--url", a.url)
    refused = jip(*PROJECTS, "--url", b.url)
    assert refused.exit_code == 1
    assert "missing bearer token (HTTP 401)" in refused.output
    assert f"logged in to {a.url}" in refused.output
    assert f"jip login --url {b.url}" in refused.output


def test_jip_api_token_comes_before_the_stored_login_for_every_command(
    sites: dict[str, FakeSite], jip: Callable[..., Result]
) -> None:
    a = sites["a"]
    _login(jip, "--url", a.url)
    for command in (SEARCH, RUNS, PROJECTS):
        assert jip(*command, JIP_API_TOKEN="from-env").exit_code == 0
    assert a.tokens() == ["Bearer from-env"] * 3


def test_without_a_login_every_command_and_login_find_the_running_site(
    sites: dict[str, FakeSite], jip: Callable[..., Result], tmp_path: Path
) -> None:
    b = sites["b"]
    _run_here(tmp_path, b.url)
    for command in (SEARCH, RUNS):
        assert jip(*command).exit_code == 0
    login = _login(jip)
    assert f"Logged in to {b.url} as alice" in login.output
    assert jip(*PROJECTS).exit_code == 0
    assert b.tokens() == [None, None, "Bearer token-b"]


def test_login_without_url_logs_in_again_to_the_stored_site(
    sites: dict[str, FakeSite], jip: Callable[..., Result], tmp_path: Path
) -> None:
    a, b = sites["a"], sites["b"]
    _login(jip, "--url", a.url)
    _run_here(tmp_path, b.url)
    again = _login(jip)
    assert f"Logged in to {a.url} as alice" in again.output
    assert b.seen == []


def test_every_command_keeps_its_help(jip: Callable[..., Result]) -> None:
    def walk(group: object, path: list[str]) -> Iterator[list[str]]:
        yield path
        for name, command in getattr(group, "commands", {}).items():
            yield from walk(command, [*path, name])

    paths = list(walk(cli, []))
    assert ["project", "list"] in paths and ["flow", "runs"] in paths
    for path in paths:
        result = jip(*path, "--help")
        assert result.exit_code == 0 and "Usage: " in result.output, (path, result.output)


def test_error_answers_become_one_line_messages() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/validation":
            detail = [{"loc": ["body", "limit"], "msg": "too big"}]
            return httpx.Response(422, json={"detail": detail})
        if request.url.path == "/oauth":
            return httpx.Response(400, json={"error": "invalid_grant"})
        return httpx.Response(502, text="")

    client = SiteClient("http://site.example", token=None)
    client.http = httpx.Client(base_url=client.base_url, transport=httpx.MockTransport(answer))
    for path, message in (
        ("/validation", "body.limit: too big (HTTP 422)"),
        ("/oauth", "invalid_grant (HTTP 400)"),
        ("/empty", "Bad Gateway (HTTP 502)"),
    ):
        with pytest.raises(click.ClickException, match=re.escape(message)):
            client.call("GET", path)


def test_a_wildcard_address_is_reached_over_loopback() -> None:
    assert reachable_host("0.0.0.0") == "127.0.0.1"
    assert reachable_host("::") == "[::1]"
    assert reachable_host("fe80::1") == "[fe80::1]"
    assert reachable_host("site.example") == "site.example"
    assert same_site("http://site:80/", "http://site")
    assert not same_site("http://site:8000", "http://site:8001")
