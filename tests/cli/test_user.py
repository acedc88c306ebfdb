"""`jip user …` on the site's catalog; `jip login`/`jip logout` against the site's issuer."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from fastapi import FastAPI
from fastapi.testclient import TestClient
from tests.base.support import PASSWORD, SITE, add_user

from jip.base.audit import AuditFilter
from jip.cli import site as site_cli
from jip.cli import user as user_cli
from jip.cli.main import cli
from jip.config import Settings
from jip.runtime import Runtime, build_runtime

for command in (user_cli.user, user_cli.login, user_cli.logout):
    cli.add_command(command)  # without the other services' commands


def jip(data_dir: Path, *args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(cli, ["--data-dir", str(data_dir), *args], input=stdin)


@pytest.fixture
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    return home


@pytest.fixture
def site_http(app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's HTTP client talks to the test app."""
    monkeypatch.setattr(site_cli, "issuer_client", lambda: TestClient(app))


# -- jip user -------------------------------------------------------------------------------
def test_user_add_list_passwd_remove(tmp_path: Path) -> None:
    data = tmp_path / "data"
    added = jip(data, "user", "add", "Alice", stdin="alice-password\nalice-password\n")
    assert added.exit_code == 0, added.output
    assert "Created user alice" in added.output
    admin = jip(data, "user", "add", "root", "--admin", "--generate")
    one_time = admin.output.strip().rsplit(" ", 1)[-1]
    assert admin.exit_code == 0 and len(one_time) >= 12

    listed = jip(data, "user", "list", "--json")
    rows = json.loads(listed.output)
    assert [(r["username"], r["is_admin"]) for r in rows] == [("alice", False), ("root", True)]

    assert (
        jip(data, "user", "passwd", "alice", stdin="new-password-1\nnew-password-1\n").exit_code
        == 0
    )
    assert jip(data, "user", "remove", "alice", "--yes").exit_code == 0
    assert "alice" not in jip(data, "user", "list").output

    runtime = build_runtime(Settings(data_dir=data))
    try:
        assert runtime.identity.users.verify("root", one_time).is_admin
        changes = [
            r.action for r in reversed(runtime.identity.audit.list(AuditFilter(action="user.")))
        ]
        assert changes == ["user.create", "user.create", "user.password", "user.remove"]
        assert runtime.identity.audit.list()[0].username.startswith("cli:")
    finally:
        runtime.close()


def test_user_errors_are_messages_not_tracebacks(tmp_path: Path) -> None:
    data = tmp_path / "data"
    jip(data, "user", "add", "alice", stdin="alice-password\nalice-password\n")
    duplicate = jip(data, "user", "add", "alice", stdin="other-password\nother-password\n")
    assert duplicate.exit_code == 1
    assert "already exists" in duplicate.output
    short = jip(data, "user", "add", "bob", stdin="short\nshort\n")
    assert "too short" in short.output
    assert "no user" in jip(data, "user", "remove", "nobody", "--yes").output


# -- jip login / logout ----------------------------------------------------------------------
def test_login_stores_the_token_readable_by_the_user_only(
    tmp_path: Path, runtime: Runtime, config_home: Path, site_http: None
) -> None:
    add_user(runtime, "alice")
    result = jip(tmp_path, "login", "--url", SITE, "-u", "alice", stdin=f"{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    path = config_home / "jip" / "token.json"
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    stored = json.loads(path.read_text())
    assert stored["site"] == SITE and stored["username"] == "alice"
    claims = runtime.identity.authenticator.verifier.verify(stored["access_token"])
    assert claims["preferred_username"] == "alice"
    assert site_cli.bearer_token() == stored["access_token"]


def test_login_replacing_a_readable_token_file_makes_it_private(
    tmp_path: Path, runtime: Runtime, config_home: Path, site_http: None
) -> None:
    add_user(runtime, "alice")
    path = config_home / "jip" / "token.json"
    path.parent.mkdir(parents=True)
    path.write_text("{}")
    path.chmod(0o644)
    assert (
        jip(tmp_path, "login", "--url", SITE, "-u", "alice", stdin=f"{PASSWORD}\n").exit_code == 0
    )
    assert path.stat().st_mode & 0o777 == 0o600


def test_login_with_a_wrong_password_fails_and_stores_nothing(
    tmp_path: Path, runtime: Runtime, config_home: Path, site_http: None
) -> None:
    add_user(runtime, "alice")
    result = jip(tmp_path, "login", "--url", SITE, "-u", "alice", stdin="wrong\n")
    assert result.exit_code == 1
    assert "invalid username or password" in result.output
    assert not (config_home / "jip" / "token.json").exists()


def test_expired_token_is_refreshed_and_saved(
    tmp_path: Path, runtime: Runtime, config_home: Path, site_http: None
) -> None:
    add_user(runtime, "alice")
    jip(tmp_path, "login", "--url", SITE, "-u", "alice", "--password-stdin", stdin=f"{PASSWORD}\n")
    path = config_home / "jip" / "token.json"
    stored = json.loads(path.read_text())
    stored["expires_at"] = time.time() - 1
    site_cli.save_token(stored)
    fresh = site_cli.bearer_token()
    assert fresh != stored["access_token"]
    assert json.loads(path.read_text())["refresh_token"] != stored["refresh_token"]  # rotated


def test_logout_ends_the_session_and_deletes_the_token(
    tmp_path: Path, runtime: Runtime, app: FastAPI, config_home: Path, site_http: None
) -> None:
    add_user(runtime, "alice")
    jip(tmp_path, "login", "--url", SITE, "-u", "alice", stdin=f"{PASSWORD}\n")
    path = config_home / "jip" / "token.json"
    refresh_token = json.loads(path.read_text())["refresh_token"]
    result = jip(tmp_path, "logout")
    assert result.exit_code == 0, result.output
    assert not path.exists()
    refused = TestClient(app).post(
        "/auth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": "jip-cli",
        },
    )
    assert refused.status_code == 400
    assert "Not logged in" in jip(tmp_path, "logout").output
