"""`jip user …`, `jip login`, `jip logout` and `jip keycloak bootstrap`.

`jip user` manages the local users of the embedded shape directly in the site's catalog
(run it on the site's machine, as the site admin). `jip login` gets a token from the
site's issuer and keeps it in the user's config directory (``~/.config/jip/token.json``,
mode 0600); other commands send it with :func:`auth_headers`.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import httpx

from jip.base.issuer import CLI_CLIENT
from jip.cli.main import settings_from
from jip.config import Settings
from jip.errors import JipError

TOKEN_FILE = "token.json"
REFRESH_MARGIN_S = 30


# -- the token file ------------------------------------------------------------------------
def token_path() -> Path:
    return Path(click.get_app_dir("jip")) / TOKEN_FILE


def save_token(data: dict[str, Any], path: Path | None = None) -> Path:
    """Write ``data`` readable by its owner only (0600), replacing the file atomically."""
    path = path or token_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # a leftover partial file may have had another mode
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return path


def load_token(path: Path | None = None) -> dict[str, Any]:
    path = path or token_path()
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise click.ClickException("not logged in: run `jip login`") from None
    return data


def bearer_token(path: Path | None = None) -> str:
    """A valid access token from the token file, refreshed (and saved) when it expired."""
    data = load_token(path)
    if data.get("expires_at", 0) - REFRESH_MARGIN_S > time.time():
        return str(data["access_token"])
    with _http() as client:
        response = client.post(
            data["token_endpoint"],
            data={
                "grant_type": "refresh_token",
                "refresh_token": data["refresh_token"],
                "client_id": data.get("client_id", CLI_CLIENT),
            },
        )
    if response.status_code != 200:
        raise click.ClickException("the session expired: run `jip login` again")
    data.update(_token_fields(response.json()))
    save_token(data, path)
    return str(data["access_token"])


def auth_headers(path: Path | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {bearer_token(path)}"}


def _token_fields(body: dict[str, Any]) -> dict[str, Any]:
    now = time.time()
    return {
        "access_token": body["access_token"],
        "refresh_token": body.get("refresh_token", ""),
        "expires_at": now + float(body.get("expires_in", 0)),
        "refresh_expires_at": now + float(body.get("refresh_expires_in", 0)),
    }


def _http() -> httpx.Client:
    return httpx.Client(timeout=30)


def _discover(client: httpx.Client, issuer: str) -> dict[str, Any]:
    url = f"{issuer.rstrip('/')}/.well-known/openid-configuration"
    try:
        response = client.get(url)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise click.ClickException(f"cannot read {url}: {exc}") from None
    return body


# -- login / logout ------------------------------------------------------------------------
@click.command()
@click.option("--url", default=None, help="The site (default: auth.public_url, or this host).")
@click.option(
    "--issuer", default=None, help="The token issuer (default: auth.issuer_url or --url)."
)
@click.option("--username", "-u", prompt=True, help="Your username.")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@click.pass_context
def login(
    ctx: click.Context, url: str | None, issuer: str | None, username: str, password_stdin: bool
) -> None:
    """Log in and keep the token in ~/.config/jip/token.json (mode 0600)."""
    from jip.base.identity import site_url

    settings = settings_from(ctx)
    site = (url or site_url(settings)).rstrip("/")
    issuer = (issuer or settings.auth.issuer_url or site).rstrip("/")
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = click.prompt("Password", hide_input=True)
    with _http() as client:
        discovery = _discover(client, issuer)
        response = client.post(
            discovery["token_endpoint"],
            data={
                "grant_type": "password",
                "client_id": CLI_CLIENT,
                "username": username,
                "password": password,
                "scope": "openid",
            },
        )
    if response.status_code == 429:
        retry = response.headers.get("Retry-After", "a few minutes")
        raise click.ClickException(f"too many failed logins: try again in {retry} s")
    if response.status_code != 200:
        raise click.ClickException(f"login failed: {_oauth_message(response)}")
    path = save_token(
        {
            "site": site,
            "issuer": issuer,
            "token_endpoint": discovery["token_endpoint"],
            "end_session_endpoint": discovery.get("end_session_endpoint", ""),
            "client_id": CLI_CLIENT,
            "username": username,
            **_token_fields(response.json()),
        }
    )
    click.echo(f"Logged in to {site} as {username} (token in {path})")


@click.command()
def logout() -> None:
    """End the session at the issuer and delete the stored token."""
    path = token_path()
    if not path.exists():
        click.echo("Not logged in.")
        return
    data = load_token(path)
    endpoint = data.get("end_session_endpoint")
    if endpoint and data.get("refresh_token"):
        try:
            with _http() as client:
                client.post(
                    endpoint,
                    data={
                        "client_id": data.get("client_id", CLI_CLIENT),
                        "refresh_token": data["refresh_token"],
                    },
                )
        except httpx.HTTPError as exc:
            click.echo(
                f"warning: could not reach {endpoint} ({exc}); token deleted anyway", err=True
            )
    path.unlink(missing_ok=True)
    click.echo(f"Logged out of {data.get('site', 'the site')}.")


def _oauth_message(response: httpx.Response) -> str:
    try:
        body = response.json()
        return str(body.get("error_description") or body.get("error") or body)
    except ValueError:
        return f"HTTP {response.status_code}"


# -- jip user ------------------------------------------------------------------------------
@contextlib.contextmanager
def _local(ctx: click.Context) -> Iterator[tuple[Any, Any]]:
    """The site's users and audit log, straight from its catalog; errors become messages."""
    from jip.backends import catalog_engine_for
    from jip.base.audit import AuditLog
    from jip.base.users import Users
    from jip.migrations import upgrade

    settings: Settings = settings_from(ctx)
    url = settings.resolved_catalog_url
    upgrade(url)
    engine = catalog_engine_for(url)
    try:
        yield Users(engine), AuditLog(engine)
    except JipError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        engine.dispose()


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


@click.group()
def user() -> None:
    """Manage the site's local users (embedded shape; Keycloak manages them in a cluster)."""


@user.command("add")
@click.argument("username")
@click.option("--admin", is_flag=True, help="Make the user a site admin.")
@click.option("--generate", is_flag=True, help="Generate a one-time password and print it.")
@click.pass_context
def add(ctx: click.Context, username: str, admin: bool, generate: bool) -> None:
    """Create a user (asks for the password unless --generate)."""
    from jip.base.audit import AuditAction
    from jip.base.users import generate_password

    password = (
        generate_password()
        if generate
        else click.prompt("Password", hide_input=True, confirmation_prompt=True)
    )
    with _local(ctx) as (users, audit):
        info = users.create(username, password, is_admin=admin)
        audit.record(
            AuditAction.USER_CREATE,
            username=_actor(),
            target=info.username,
            detail={"is_admin": admin},
            client_ip="local",
        )
    click.echo(f"Created {'admin' if admin else 'user'} {info.username}.")
    if generate:
        click.echo(f"One-time password (shown once, change it after login): {password}")


@user.command("passwd")
@click.argument("username")
@click.pass_context
def passwd(ctx: click.Context, username: str) -> None:
    """Set a user's password (ends their sessions)."""
    from jip.base.audit import AuditAction

    password = click.prompt("New password", hide_input=True, confirmation_prompt=True)
    with _local(ctx) as (users, audit):
        users.set_password(username, password)
        audit.record(
            AuditAction.USER_PASSWORD, username=_actor(), target=username.lower(), client_ip="local"
        )
    click.echo(f"Password of {username.lower()} changed.")


@user.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def list_users(ctx: click.Context, as_json: bool) -> None:
    """List the site's users, their rights and projects."""
    with _local(ctx) as (users, _audit):
        infos = users.list()
    if as_json:
        rows = [
            {
                "username": i.username,
                "is_admin": i.is_admin,
                "disabled": i.disabled,
                "created_at": i.created_at.isoformat(),
                "projects": {p: r.value for p, r in i.projects.items()},
            }
            for i in infos
        ]
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'USERNAME':<24}{'ADMIN':<7}{'DISABLED':<10}{'CREATED':<22}PROJECTS")
    for i in infos:
        projects = ", ".join(f"{p}:{r.value}" for p, r in i.projects.items()) or "-"
        click.echo(
            f"{i.username:<24}{'yes' if i.is_admin else 'no':<7}"
            f"{'yes' if i.disabled else 'no':<10}{i.created_at:%Y-%m-%d %H:%M:%S}   {projects}"
        )


@user.command("remove")
@click.argument("username")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def remove(ctx: click.Context, username: str, yes: bool) -> None:
    """Delete a user and their memberships (the audit log keeps their entries)."""
    from jip.base.audit import AuditAction

    if not yes:
        click.confirm(f"Remove user {username.lower()}?", abort=True)
    with _local(ctx) as (users, audit):
        users.remove(username)
        audit.record(
            AuditAction.USER_REMOVE, username=_actor(), target=username.lower(), client_ip="local"
        )
    click.echo(f"Removed {username.lower()}.")


# -- jip keycloak ----------------------------------------------------------------------------
@click.group()
def keycloak() -> None:
    """Set up Keycloak as the issuer of the cluster shape."""


@keycloak.command("bootstrap")
@click.option("--admin-url", required=True, help="Keycloak's base URL (https://keycloak.example).")
@click.option("--admin-user", default="admin", show_default=True, help="A master-realm admin.")
@click.option("--admin-password", prompt=True, hide_input=True, help="Their password.")
@click.pass_context
def keycloak_bootstrap(
    ctx: click.Context, admin_url: str, admin_user: str, admin_password: str
) -> None:
    """Create the realm, roles, clients jip and jip-cli, and a group per project."""
    from keycloak.exceptions import KeycloakError

    from jip.base.keycloak import bootstrap_realm

    settings = settings_from(ctx)
    try:
        setup = bootstrap_realm(settings, admin_url, admin_user, admin_password)
    except KeycloakError as exc:
        raise click.ClickException(f"Keycloak refused: {exc}") from None
    click.echo(f"Realm {setup.realm}: roles {', '.join(setup.roles)}")
    click.echo(f"Clients: {', '.join(setup.clients)}")
    click.echo(f"Project groups: {len(setup.groups)}")
    click.echo(
        f"Set auth.issuer_url to {admin_url.rstrip('/')}/realms/{setup.realm} on every service."
    )
