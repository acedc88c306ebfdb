"""Entry point of the `jip` command: the root group, and every subcommand added to it.

Imports go one way: this module imports the subcommand modules, they import only
:mod:`jip.cli.site` (settings, site, token, client, output), never this module. They are
imported when the command runs, so that ``import jip.cli.main`` stays light.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def start_listener_early(args: list[str]) -> None:
    """For `jip up` (roles with a DICOM listener): start its first listener interpreter
    before click parses the options and pydantic reads the settings, so that its imports
    overlap ours (:func:`jip.store.dimse.listener.prespawn`; it binds nothing before
    the catalog is recovered). The data directory is guessed from ``--data-dir`` and
    ``JIP_DATA_DIR``; a wrong guess costs a second start, nothing else."""
    data_dir: str | None = None
    rest = iter(args)
    for arg in rest:
        if arg == "--data-dir":
            data_dir = next(rest, None)
        elif arg.startswith("--data-dir="):
            data_dir = arg.partition("=")[2]
        elif arg != "up":
            return  # another command, --help or --version
        else:
            break
    else:
        return
    options = list(rest)
    roles = [options[i + 1] for i, o in enumerate(options[:-1]) if o == "--role"]
    roles += [o.partition("=")[2] for o in options if o.startswith("--role=")]
    if {"-h", "--help", "--migrate-only"} & set(options) or not set(roles) <= {"all", "dicom"}:
        return
    data_dir = data_dir or os.environ.get("JIP_DATA_DIR")
    if data_dir is None and os.environ.get("JIP_CONFIG"):
        return  # the YAML may name it: no cheap guess
    from jip.store.dimse.listener import prespawn

    try:
        prespawn(Path(data_dir or "jip-data"))
    except OSError:
        return  # a data directory it cannot create: `jip up` says so in its own words


if __name__ == "__main__":  # `python -m jip.cli.main up`: before even click is imported
    start_listener_early(sys.argv[1:])

import click  # noqa: E402

from jip.errors import JipError  # noqa: E402


class _Commands(click.Group):
    """Subcommand modules are imported when a command is looked up: `jip up` imports
    only its own, so that its DICOM listener starts without waiting for the rest."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands:
            if cmd_name == "up":
                from jip.cli import up

                self.add_command(up.up)
            else:
                _register()
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        _register()
        return super().list_commands(ctx)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Where this site keeps its data (default ./jip-data or JIP_DATA_DIR).",
)
@click.version_option("0.1.0", prog_name="jip")
@click.pass_context
def cli(ctx: click.Context, data_dir: str | None) -> None:
    """JIP, the Joint Imaging Platform: run and use one site."""
    ctx.obj = {"data_dir": data_dir} if data_dir else {}


def _register() -> None:
    from jip.cli import dicom, status, up

    cli.add_command(up.up)
    cli.add_command(status.status)
    cli.add_command(dicom.dicom)

    from jip.cli import user

    cli.add_command(user.user)
    cli.add_command(user.login)
    cli.add_command(user.logout)

    from jip.cli import keycloak

    cli.add_command(keycloak.keycloak)

    from jip.cli import cohort, meta

    cli.add_command(cohort.cohort)
    cli.add_command(meta.meta)

    from jip.cli import flow, operator, project

    cli.add_command(flow.flow)
    cli.add_command(operator.operator)
    cli.add_command(project.project)

    from jip.cli import hub

    cli.add_command(hub.hub)

    from jip.cli import fed

    cli.add_command(fed.fed)

    from jip.cli import samples

    cli.add_command(samples.samples)

    from jip.cli import forward

    cli.add_command(forward.forward)

    from jip.cli import backup

    cli.add_command(backup.backup_group)

    from jip.cli import pacs

    dicom.dicom.add_command(pacs.saved_query)
    dicom.dicom.add_command(pacs.retrieve)


def main() -> None:
    start_listener_early(sys.argv[1:])
    try:
        cli(standalone_mode=True)
    except JipError as exc:  # pragma: no cover - click exits before in most cases
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
