"""`jip fed` for a site's admin at the machine: bundles carried by hand, the site's
identity, and the vocabulary mapping (registered on the `jip fed` group by cli/fed.py).

    jip fed identity                              # give the key to researchers
    jip fed offline-init mannheim                 # a site that never reaches a hub
    jip fed import-job job.json
    jip fed export-result JOB result.json
    jip fed mapping suggest --field BodyPartExamined
    jip fed mapping set BodyPartExamined PROSTATA prostate
    jip fed mapping set SeriesDescription 'ep2d_diff*' dwi

Everything works on the site's own data dir and catalog, in-process (no login).
"""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from jip.cli.site import echo_json, json_option, settings_from, table
from jip.config import Settings
from jip.errors import JipError

SUGGESTED_FIELDS = ("BodyPartExamined", "SeriesDescription")


@contextlib.contextmanager
def site_catalog(ctx: click.Context, data_dir: str | None = None) -> Iterator[tuple[Settings, Any]]:
    """The site's settings and catalog engine (migrated); errors become messages."""
    from jip.backends import catalog_engine_for
    from jip.migrations import upgrade

    settings = settings_from(ctx, data_dir=data_dir)
    url = settings.resolved_catalog_url
    engine = None
    try:
        settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        upgrade(url)
        engine = catalog_engine_for(url)
        yield settings, engine
    except JipError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        if engine is not None:
            engine.dispose()


@contextlib.contextmanager
def site_index(settings: Settings) -> Iterator[Any]:
    """The site's metadata index, closed afterwards."""
    from jip.backends import index_for

    index = index_for(settings.resolved_index_url)
    try:
        yield index
    finally:
        index.close()


def site_images(settings: Settings, engine: Any, index: Any) -> Any:
    """The agent's reader of the site's stored images (roi values inside SEGs)."""
    from jip.backends import storage_for
    from jip.federation.site import StoredImages
    from jip.store import Catalog

    catalog = Catalog(engine, default_project=settings.store.default_project)
    return StoredImages(catalog, storage_for(settings.resolved_storage_url, settings), index)


def actor() -> str:
    return f"cli:{getpass.getuser()}"


def _files(settings: Settings) -> Any:
    from jip.federation.site import SiteFiles

    return SiteFiles.of(settings.data_dir)


# -- identity and bundles -----------------------------------------------------------------
@click.command()
@json_option
@click.pass_context
def identity(ctx: click.Context, as_json: bool) -> None:
    """This site's id and identity key: researchers check its result bundles with it."""
    from jip.federation.site import site_identity

    with site_catalog(ctx) as (settings, _):
        about = site_identity(_files(settings)).describe()
    if as_json:
        echo_json(about)
    else:
        click.echo(f"site {about['site_id']}  identity key {about['identity_key']}")


@click.command("offline-init")
@click.argument("site_id")
@click.pass_context
def offline_init(ctx: click.Context, site_id: str) -> None:
    """Make the identity of a site that takes part by bundles alone (no hub)."""
    from jip.base import AuditLog
    from jip.federation.site import init_offline

    with site_catalog(ctx) as (settings, engine):
        about = init_offline(_files(settings), site_id).describe()
        AuditLog(engine).record("fed.offline_init", username=actor(), detail=about)
    click.echo(f"Site {site_id}: identity key {about['identity_key']} (give it to researchers).")


@click.command("import-job")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@json_option
@click.pass_context
def import_job(ctx: click.Context, file: Path, as_json: bool) -> None:
    """Take a signed job bundle (a JSON file) into the queue, under the site's policy."""
    from jip.federation.site import import_job as take
    from jip.federation.site import queue_view
    from jip.federation.site.bundles import MAX_BUNDLE_BYTES

    with file.open("rb") as handle:
        data = handle.read(MAX_BUNDLE_BYTES + 1)
    with site_catalog(ctx) as (settings, engine), site_index(settings) as index:
        images = site_images(settings, engine, index)
        record = take(engine, index, _files(settings), data, by=actor(), images=images)
        view = queue_view(record)
    if as_json:
        echo_json(view)
        return
    why = f": {view['reason']}" if view["reason"] else ""
    click.echo(f"Imported job {view['job_id']} ({view['state']}{why}).")
    if view["state"] == "queued":
        click.echo(f"See it with `jip fed queue`; approve with `jip fed approve {view['job_id']}`.")


@click.command("export-result")
@click.argument("job_id")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_context
def export_result(ctx: click.Context, job_id: str, file: Path) -> None:
    """Write the signed result bundle of a job that came by bundle (FILE must be new)."""
    from jip.federation.site import export_result as export

    if file.exists():
        raise click.ClickException(f"{file}: exists already; name a new file")
    with site_catalog(ctx) as (settings, engine), site_index(settings) as index:
        images = site_images(settings, engine, index)
        data = export(engine, index, _files(settings), job_id, by=actor(), images=images)
    try:
        with file.open("xb") as handle:
            handle.write(data)
    except OSError as exc:
        raise click.ClickException(f"{file}: {exc.strerror}") from None
    click.echo(f"Wrote {file} ({len(data)} bytes): the sealed result, signed by this site.")


# -- vocabulary ------------------------------------------------------------------------------
@click.group()
def mapping() -> None:
    """This site's local values mapped to the network's vocabulary."""


@mapping.command("list")
@click.option("--field", default=None, help="Only this META field.")
@json_option
@click.pass_context
def mapping_list(ctx: click.Context, field: str | None, as_json: bool) -> None:
    from jip.federation.site import Vocabulary

    with site_catalog(ctx) as (_, engine):
        views = [m.view() for m in Vocabulary(engine).list(field)]
    if as_json:
        echo_json(views)
    else:
        rows = [[v["field"], v["local"], v["network"], "pattern" * v["pattern"]] for v in views]
        table(["field", "local", "network", ""], rows)


@mapping.command("set")
@click.argument("field")
@click.argument("local")
@click.argument("network")
@click.pass_context
def mapping_set(ctx: click.Context, field: str, local: str, network: str) -> None:
    """LOCAL (a value, or a pattern with * and ?) of FIELD means the network's NETWORK."""
    from jip.base import AuditLog
    from jip.federation.site import Vocabulary

    with site_catalog(ctx) as (_, engine):
        done = Vocabulary(engine).set(field, local, network, by=actor())
        AuditLog(engine).record(
            "fed.mapping.set", username=actor(), target=done.field, detail=done.view()
        )
    click.echo(f"{done.field}: {done.local!r} -> {done.network!r}")


@mapping.command("remove")
@click.argument("field")
@click.argument("local")
@click.pass_context
def mapping_remove(ctx: click.Context, field: str, local: str) -> None:
    from jip.base import AuditLog
    from jip.federation.site import Vocabulary

    with site_catalog(ctx) as (_, engine):
        Vocabulary(engine).remove(field, local)
        AuditLog(engine).record(
            "fed.mapping.remove", username=actor(), target=field, detail={"local": local}
        )
    click.echo(f"{field}: {local!r} is no longer mapped.")


@mapping.command("suggest")
@click.option("--field", "fields", multiple=True, help="META field (default: body part, series).")
@click.option("--top", type=click.IntRange(1, 10_000), default=20, help="Most frequent values.")
@json_option
@click.pass_context
def mapping_suggest(ctx: click.Context, fields: tuple[str, ...], top: int, as_json: bool) -> None:
    """Proposals from this site's most frequent values; nothing is applied."""
    from jip.federation.site import Vocabulary, suggest

    with site_catalog(ctx) as (settings, engine), site_index(settings) as index:
        found = [
            dataclasses.asdict(s)
            for f in fields or SUGGESTED_FIELDS
            for s in suggest(Vocabulary(engine), index, f, top)
        ]
    if as_json:
        echo_json(found)
        return
    rows = [
        [s["field"], s["local"], s["network"], s["count"], s["rule"], s["mapped"] or ""]
        for s in found
    ]
    table(["field", "local", "network", "series", "rule", "mapped now"], rows)
    if found:
        click.echo("Apply one with `jip fed mapping set FIELD LOCAL NETWORK`.")


COMMANDS = (identity, offline_init, import_job, export_result, mapping)
