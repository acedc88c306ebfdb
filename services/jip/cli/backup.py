"""`jip backup create|verify|restore`: the embedded site's data, copied and checked."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from jip import backup
from jip.cli.site import jip_errors, settings_from


class _Steps:
    """One progress bar per step of a backup (databases, blobs, files, verify), on stderr."""

    def __init__(self) -> None:
        self.step = ""
        self.bar: Any = None

    def __call__(self, step: str, done: int, total: int) -> None:
        if step != self.step:
            self.close()
            self.step = step
            if step != "done" and total > 1:
                self.bar = click.progressbar(length=total, label=f"{step:9}", file=sys.stderr)
                self.bar.render_progress()
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.render_finish()
        self.bar = None


@click.group("backup")
def backup_group() -> None:
    """Back up and restore an embedded site (SQLite catalog, files on disk).

    A cluster site is backed up with its systems' own tools: see docs/site-admin.md.
    """


@backup_group.command("create")
@click.argument("target", type=click.Path(file_okay=False, path_type=Path))
@click.pass_context
def create(ctx: click.Context, target: Path) -> None:
    """Copy the site into the new folder TARGET while it keeps running."""
    steps = _Steps()
    with jip_errors():
        try:
            summary = backup.create(settings_from(ctx), target, steps)
        finally:
            steps.close()
    click.echo(
        f"backed up {summary.instances} instances ({summary.blobs} blobs, "
        f"{summary.blob_bytes / 1e6:.1f} MB) and {summary.files} other files to {target}"
    )


@backup_group.command("verify")
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
def verify(source: Path) -> None:
    """Check every file of the backup in SOURCE against its manifest."""
    steps = _Steps()
    with jip_errors():
        try:
            manifest = backup.verify(source, steps)
        finally:
            steps.close()
    click.echo(f"{source}: intact, made {manifest['created_at']}")


@backup_group.command("restore")
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.pass_context
def restore(ctx: click.Context, source: Path) -> None:
    """Restore SOURCE into an empty data folder (give it with --data-dir), checked first."""
    steps = _Steps()
    with jip_errors():
        try:
            summary = backup.restore(settings_from(ctx), source, steps)
        finally:
            steps.close()
    click.echo(
        f"restored {summary.instances} instances and {summary.files} other files; "
        "start the site with `jip up`"
    )
