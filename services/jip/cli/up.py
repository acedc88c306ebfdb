"""`jip up`: run this site in the foreground."""

from __future__ import annotations

import click

from jip.cli.site import settings_from
from jip.embedded import Role, run
from jip.logs import setup_logging


@click.command()
@click.option(
    "--http-port", type=int, default=None, help="HTTP API port (default 8000, JIP_HTTP_PORT)."
)
@click.option("--http-host", default=None, help="HTTP bind address (default 127.0.0.1).")
@click.option(
    "--dicom-port",
    type=int,
    default=None,
    help="DICOM port (default 11112, JIP_STORE__DICOM_PORT).",
)
@click.option("--ae-title", default=None, help="Our AE title (default JIP, JIP_STORE__AE_TITLE).")
@click.option(
    "--listeners", type=int, default=None, help="DICOM listener processes (0: one per core)."
)
@click.option(
    "--role",
    type=click.Choice([r.value for r in Role]),
    default=Role.ALL.value,
    show_default=True,
    help=(
        "Run every part (all: one machine) or one service of the cluster shape: store "
        "(DICOMweb), meta (search, cohorts), flow (workflows, rules), base (identity, "
        "projects, audit, UI), dicom (DIMSE listener), indexer, federation (the agent); "
        "api is store+meta+flow+base."
    ),
)
@click.option("--no-airflow", is_flag=True, default=False, help="Do not start the workflow engine.")
@click.option(
    "--migrate-only",
    is_flag=True,
    default=False,
    help="Bring the catalog schema up to date and exit (the chart's migrations Job).",
)
@click.pass_context
def up(
    ctx: click.Context,
    http_port: int | None,
    http_host: str | None,
    dicom_port: int | None,
    ae_title: str | None,
    listeners: int | None,
    role: str,
    no_airflow: bool,
    migrate_only: bool,
) -> None:
    """Start the platform (HTTP API, DICOM listener, workflows) until Ctrl-C."""
    settings = settings_from(
        ctx,
        http_port=http_port,
        http_host=http_host,
        store__dicom_port=dicom_port,
        store__ae_title=ae_title,
        store__listener_processes=listeners,
        flow__airflow_enabled=False if no_airflow else None,
    )
    setup_logging(settings.log_level, settings.log_format)
    if migrate_only:
        from jip.embedded import migrate

        migrate(settings)
        click.echo("The catalog is up to date.", err=True)
        return
    run(settings, announce=lambda message: click.echo(message, err=True), role=Role(role))
