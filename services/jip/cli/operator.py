"""`jip operator new|test`: scaffold an operator, run one on the local store's data.

`jip operator test` runs on the site's machine: it copies the series out of the local
store, runs ``operators/<name>/main.py`` through the subprocess runner exactly as a
workflow would, and shows the log, the progress and what the operator wrote.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import click

from jip.cli.site import parse_params, settings_from
from jip.errors import JipError


@click.group()
def operator() -> None:
    """Operators: scaffold new ones, test them on local data."""


@operator.command("new")
@click.argument("name")
@click.option(
    "--dir",
    "root",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where operators live (default flow.operators_dir, else the repository's operators/).",
)
@click.pass_context
def new(ctx: click.Context, name: str, root: Path | None) -> None:
    """Create operators/NAME/ with main.py, Dockerfile, params.schema.json, README, a test."""
    from jip.flow.scaffold import image_build_command, scaffold_operator
    from jip.flow.worker.runner import operators_dir

    target = root or operators_dir(settings_from(ctx))
    try:
        files = scaffold_operator(target, name)
    except JipError as exc:
        raise click.ClickException(str(exc)) from None
    for path in files:
        click.echo(f"created {path}")
    click.echo(f"next: pytest {target / name}  and  jip operator test {name} --series <UID>")
    click.echo(f"image: make images, or alone: {image_build_command(name)}")


@operator.command("test")
@click.argument("name")
@click.option("--series", "series", multiple=True, required=True, help="A Series UID (repeat).")
@click.option("--param", "params", multiple=True, help="k=v (JSON values).")
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep the output here (default: a temporary folder, removed afterwards).",
)
@click.option(
    "--version", default="latest", show_default=True, help="Image tag (container runner)."
)
@click.pass_context
def test(
    ctx: click.Context,
    name: str,
    series: tuple[str, ...],
    params: tuple[str, ...],
    output: Path | None,
    version: str,
) -> None:
    """Run operator NAME on series of the local store through the subprocess runner."""
    from jip.backends import catalog_engine_for, storage_for
    from jip.flow.worker.runner import OperatorJob, describe_exit, operators_dir
    from jip.flow.worker.runner_subprocess import SubprocessRunner
    from jip.flow.worker.steps import export_local
    from jip.store.catalog.catalog import Catalog

    settings = settings_from(ctx)
    work = Path(tempfile.mkdtemp(prefix=f"jip-operator-{name}-"))
    db = catalog_engine_for(settings.resolved_catalog_url)
    try:
        storage = storage_for(settings.resolved_storage_url, settings)
        for uid in series:
            export_local(Catalog(db), storage, uid, work / "input")
        out = output or work / "output"
        job = OperatorJob(
            operator=name,
            version=version,
            input_dir=work / "input",
            output_dir=out,
            params=parse_params(params),
            series=tuple(series),
        )
        runner = SubprocessRunner(
            operators_dir=operators_dir(settings), timeout_s=settings.flow.operator_timeout_s
        )
        click.echo(f"running {name} on {len(series)} series ({' '.join(runner.command(job))})")
        outcome = runner.run(job, click.echo)
        click.echo(f"exit {outcome.exit_code} after {outcome.duration_s:.1f} s")
        for path in sorted(p for p in out.rglob("*") if p.is_file()):
            click.echo(f"  {path.relative_to(out)}  ({path.stat().st_size} bytes)")
        if not outcome.ok:
            click.echo(describe_exit(outcome, name), err=True)
            sys.exit(outcome.exit_code or 1)
    except JipError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        db.dispose()
        shutil.rmtree(work, ignore_errors=True)
