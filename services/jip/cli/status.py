"""`jip status`: what runs where on this site."""

from __future__ import annotations

import json
import os

import click
import httpx

from jip.cli.site import running_site_url, settings_from


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Say whether `jip up` runs here and where each part listens."""
    settings = settings_from(ctx)
    if not settings.state_file.exists():
        raise click.ClickException(
            f"JIP is not running for {settings.data_dir} (start it with `jip up`)"
        )
    state = json.loads(settings.state_file.read_text())
    state["running"] = _alive(int(state["pid"]))
    try:
        health = httpx.get(f"{running_site_url(settings)}/healthz", timeout=3).json()
    except (httpx.HTTPError, ValueError) as exc:
        health = {"status": f"unreachable ({exc})"}
    state["health"] = health
    if as_json:
        click.echo(json.dumps(state, indent=2))
        return
    click.echo(
        f"JIP   {'running' if state['running'] else 'NOT running (stale state)'}"
        f"  pid {state['pid']}  data {state['data_dir']}"
    )
    click.echo(f"HTTP  {state['http']}  health: {health.get('status')}")
    for name, info in state["components"].items():
        details = "  ".join(f"{k}={v}" for k, v in info.items())
        click.echo(f"{name:<6}{details}")
