"""`jip keycloak bootstrap`: set up Keycloak as the identity of the cluster shape.

Creates (idempotently) the realm named by ``auth.issuer_url``, its roles, the clients
``jip`` and ``jip-cli`` and a group per project of the site's catalog
(:func:`jip.base.keycloak.bootstrap_realm`), one progress line per step.
"""

from __future__ import annotations

import click

from jip.cli.site import jip_errors, settings_from


@click.group()
def keycloak() -> None:
    """Set up Keycloak as the issuer of the cluster shape."""


@keycloak.command("bootstrap")
@click.option(
    "--admin-url",
    default=None,
    help="Keycloak's base URL (https://keycloak.example); default: from auth.issuer_url.",
)
@click.option("--admin-user", default="admin", show_default=True, help="A master-realm admin.")
@click.option(
    "--admin-password",
    prompt=True,
    hide_input=True,
    envvar="JIP_KEYCLOAK_ADMIN_PASSWORD",
    help="Their password (prompted; or JIP_KEYCLOAK_ADMIN_PASSWORD).",
)
@click.option(
    "--project",
    "extra_projects",
    multiple=True,
    help="Also make groups for this project (repeatable); the catalog's come anyway.",
)
@click.pass_context
def bootstrap(
    ctx: click.Context,
    admin_url: str | None,
    admin_user: str,
    admin_password: str,
    extra_projects: tuple[str, ...],
) -> None:
    """Create the realm, roles, clients jip and jip-cli, and a group per project.

    Run it again after adding projects or changing auth.public_url: what exists is
    kept, what is missing is created, the clients' redirect URIs are updated.
    """
    from jip.backends import catalog_engine_for
    from jip.base import Projects, check_project_name
    from jip.base.keycloak import bootstrap_realm, server_url
    from jip.migrations import upgrade

    settings = settings_from(ctx)
    with jip_errors():
        if admin_url is None:
            if not settings.auth.issuer_url:
                raise click.UsageError(
                    "give --admin-url, or set auth.issuer_url (JIP_AUTH__ISSUER_URL) to "
                    "https://<keycloak>/realms/<realm>"
                )
            admin_url = server_url(settings.auth.issuer_url)
        for name in extra_projects:
            check_project_name(name)
        upgrade(settings.resolved_catalog_url)  # a group per project of the site's catalog
        engine = catalog_engine_for(settings.resolved_catalog_url)
        try:
            projects = set(Projects(engine).names()) | set(extra_projects)
        finally:
            engine.dispose()
        click.echo(f"Keycloak {admin_url}: logging in as {admin_user} (master realm)")
        setup = bootstrap_realm(
            settings,
            admin_url,
            admin_user,
            admin_password,
            projects=projects,
            progress=lambda line: click.echo(f"  {line}"),
        )
    click.echo(
        f"Done: {len(setup.created)} created, {len(setup.groups)} project role groups "
        f"in realm {setup.realm}."
    )
    issuer = f"{admin_url.rstrip('/')}/realms/{setup.realm}"
    if settings.auth.issuer_url != issuer:
        click.echo(f"Set auth.issuer_url to {issuer} on every service (JIP_AUTH__ISSUER_URL).")
    click.echo(
        "Give people access in Keycloak: add them to /projects/<project>/<role>, "
        "and give site admins the realm role admin."
    )
