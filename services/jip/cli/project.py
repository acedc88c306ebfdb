"""`jip project list`: the projects the logged-in user belongs to, and their roles.

Read-only, over the site's HTTP API (``GET /api/projects``), found and authorised as
:mod:`jip.cli.site` says. Projects and members are changed in the web UI's admin pages
or over ``/api/projects``.

    jip project list
    jip project list --json
"""

from __future__ import annotations

import click

from jip.cli.site import echo_json, json_option, site_client, table, url_option


@click.group()
def project() -> None:
    """Projects: the ones you belong to (changes: the admin pages or /api/projects)."""


@project.command("list")
@url_option
@json_option
@click.pass_context
def list_projects(ctx: click.Context, url: str | None, as_json: bool) -> None:
    """Your projects (every project of the site for site admins) and their members."""
    with site_client(ctx, url) as client:
        found = client.call("GET", "/api/projects")
    if as_json:
        echo_json(found)
        return
    table(
        ["NAME", "DESCRIPTION", "MEMBERS"],
        [
            [
                p["name"],
                p["description"] or None,
                ", ".join(f"{user}:{role}" for user, role in p["members"].items()) or None,
            ]
            for p in found
        ],
    )
