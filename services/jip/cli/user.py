"""`jip user …`, `jip login` and `jip logout`.

`jip user` manages the local users of the embedded shape directly in the site's catalog
(run it on the site's machine, as the site admin). `jip login` gets a token from the
site's issuer and keeps it, with the site's URL, in the user's config directory
(``~/.config/jip/token.json``, mode 0600); :mod:`jip.cli.site` sends it to that site.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import sys
from collections.abc import Iterator
from typing import Any

import click
import httpx

from jip.cli import site
from jip.cli.site import load_token, save_token, settings_from, stored_login, token_path
from jip.config import Settings
from jip.errors import JipError, detail_of


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
@click.option(
    "--url",
    default=None,
    help="The site (default: JIP_API_URL, the last login's, the running one).",
)
@click.option(
    "--issuer",
    default=None,
    help="The token issuer (default: auth.issuer_url, the last login's to this site, the site).",
)
@click.option("--username", "-u", prompt=True, help="Your username.")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@click.pass_context
def login(
    ctx: click.Context, url: str | None, issuer: str | None, username: str, password_stdin: bool
) -> None:
    """Log in and keep the token in ~/.config/jip/token.json (mode 0600)."""
    from jip.base import CLI_CLIENT

    settings = settings_from(ctx)
    target = site.site_url_of(settings, url)
    issuer = (issuer or settings.auth.issuer_url or _last_issuer(target) or target).rstrip("/")
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = click.prompt("Password", hide_input=True)
    with site.issuer_client() as client:
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
        raise click.ClickException(f"login failed: {detail_of(response)}")
    path = save_token(
        {
            "site": target,
            "issuer": issuer,
            "token_endpoint": discovery["token_endpoint"],
            "end_session_endpoint": discovery.get("end_session_endpoint", ""),
            "client_id": CLI_CLIENT,
            "username": username,
            **site.token_fields(response.json()),
        }
    )
    click.echo(f"Logged in to {target} as {username} (token in {path})")


def _last_issuer(target: str) -> str | None:
    """The issuer of the stored login, when it was a login to ``target``."""
    last = stored_login()
    if last is None or not site.same_site(str(last.get("site", "")), target):
        return None
    return last.get("issuer") or None


@click.command()
def logout() -> None:
    """End the session at the issuer and delete the stored token."""
    from jip.base import CLI_CLIENT

    path = token_path()
    if not path.exists():
        click.echo("Not logged in.")
        return
    data = load_token(path)
    endpoint = data.get("end_session_endpoint")
    if endpoint and data.get("refresh_token"):
        try:
            with site.issuer_client() as client:
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
