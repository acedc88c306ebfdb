"""`jip hub …`: run a research network's federation hub, on the hub's machine.

The hub is its own server with its own data dir (``--data-dir``, else ``JIP_HUB_DATA_DIR``,
else the global ``--data-dir``, else ``./jip-hub``); these commands work on it in-process,
as the hub admin.

    jip hub init --data-dir D [--host hub.example.org]   # database, CA, server certificate
    jip hub up --data-dir D --port 8443 [--host 0.0.0.0]  # serve HTTPS (mutual TLS for sites)
    jip hub site add NAME --json                          # one-time enrolment token, shown once
    jip hub site list
    jip hub researcher add NAME --json                    # bearer token, shown once
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import click

from jip.cli.site import echo_json, jip_errors, json_option, table
from jip.federation.hub import (
    Hub,
    add_researcher,
    add_site,
    init_hub,
    list_sites,
    open_hub,
    serve,
)

DEFAULT_DIR = "jip-hub"

data_dir_option = click.option(
    "--data-dir",
    "hub_dir",
    envvar="JIP_HUB_DATA_DIR",
    type=click.Path(file_okay=False),
    default=None,
    help="The hub's data dir (default: JIP_HUB_DATA_DIR, the global --data-dir, ./jip-hub).",
)


def _dir(ctx: click.Context, hub_dir: str | None) -> Path:
    return Path(hub_dir or (ctx.find_root().obj or {}).get("data_dir") or DEFAULT_DIR)


@contextlib.contextmanager
def _opened(ctx: click.Context, hub_dir: str | None) -> Iterator[Hub]:
    with jip_errors():
        hub = open_hub(_dir(ctx, hub_dir))
        try:
            yield hub
        finally:
            hub.close()


@click.group()
def hub() -> None:
    """The federation hub of a research network (sites connect out to it)."""


@hub.command("init")
@data_dir_option
@click.option(
    "--host",
    "hosts",
    multiple=True,
    help="A name or address sites reach the hub by (repeatable; localhost is always in).",
)
@json_option
@click.pass_context
def init(ctx: click.Context, hub_dir: str | None, hosts: tuple[str, ...], as_json: bool) -> None:
    """Create the hub: its database, its CA and its server certificate (once)."""
    with jip_errors():
        paths = init_hub(_dir(ctx, hub_dir), list(hosts))
    found = {"data_dir": str(paths.data_dir), "ca": str(paths.ca_cert)}
    if as_json:
        echo_json(found)
    else:
        click.echo(f"hub created in {paths.data_dir}; its CA is {paths.ca_cert}")


@hub.command("up")
@data_dir_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8443, show_default=True, type=int, help="Port to listen on.")
@click.pass_context
def up(ctx: click.Context, hub_dir: str | None, host: str, port: int) -> None:
    """Serve the hub over HTTPS until interrupted."""
    with _opened(ctx, hub_dir) as opened:
        click.echo(f"hub on https://{host}:{port} (CA {opened.paths.ca_cert})", err=True)
        serve(opened, host, port)


@hub.group("site")
def site() -> None:
    """The network's sites."""


@site.command("add")
@click.argument("name")
@data_dir_option
@click.option("--ttl-hours", default=24.0, show_default=True, help="How long the token lasts.")
@click.option(
    "--replace", is_flag=True, help="For an enrolled site that lost its keys: enrol it anew."
)
@json_option
@click.pass_context
def site_add(
    ctx: click.Context,
    name: str,
    hub_dir: str | None,
    ttl_hours: float,
    replace: bool,
    as_json: bool,
) -> None:
    """Add a site and print its one-time enrolment token (shown this once)."""
    with _opened(ctx, hub_dir) as opened, jip_errors():
        enrolment = add_site(opened, name, dt.timedelta(hours=ttl_hours), replace=replace)
    if as_json:
        echo_json(enrolment.to_json())
        return
    click.echo(f"site {enrolment.site_id}: enrolment token (valid until {enrolment.expires_at}):")
    click.echo(enrolment.token)
    click.echo(f"hub CA SHA-256: {enrolment.ca_sha256}")


@site.command("list")
@data_dir_option
@json_option
@click.pass_context
def site_list(ctx: click.Context, hub_dir: str | None, as_json: bool) -> None:
    """The network's sites and whether they enrolled."""
    with _opened(ctx, hub_dir) as opened:
        found = list_sites(opened)
    if as_json:
        echo_json(found)
        return
    table(
        ["SITE", "ENROLLED", "IDENTITY KEY"],
        [[s["site_id"], s["enrolled_at"] or "no", s["identity_key"]] for s in found],
    )


@hub.group("researcher")
def researcher() -> None:
    """The researchers who may submit jobs."""


@researcher.command("add")
@click.argument("name")
@data_dir_option
@json_option
@click.pass_context
def researcher_add(ctx: click.Context, name: str, hub_dir: str | None, as_json: bool) -> None:
    """Add a researcher and print their bearer token (shown this once)."""
    with _opened(ctx, hub_dir) as opened, jip_errors():
        found = add_researcher(opened, name)
    if as_json:
        echo_json(found)
    else:
        click.echo(f"researcher {found['researcher']}: bearer token:")
        click.echo(found["token"])
