"""`jip meta reindex|status|errors|indexer`: the metadata index of a site.

The commands talk to the site over HTTP, found and authorised as :mod:`jip.cli.site`
says (``--url``, ``JIP_API_URL``, the login's site, the running one; ``JIP_API_TOKEN`` or
the token of `jip login`).
`jip meta reindex --local` and `jip meta indexer` work on the data dir directly.

    jip meta status
    jip meta errors --limit 20
    jip meta reindex            # the running site re-reads every header; search goes on
    jip meta reindex --local    # the same, in this process, against --data-dir
    jip meta rebuild            # a new index from the stored summaries, in bulk, here
"""

from __future__ import annotations

import threading
import time
from typing import Any

import click

from jip.cli.site import echo_json, json_option, settings_from, site_client, table, url_option
from jip.config import Settings

POLL_S = 0.5
STALL_S = 120.0


# -- jip meta ------------------------------------------------------------------------------
@click.group()
def meta() -> None:
    """The metadata index: its state, failed headers, and rebuilding it."""


@meta.command("status")
@url_option
@json_option
@click.pass_context
def status(ctx: click.Context, url: str | None, as_json: bool) -> None:
    """How many instances wait to be indexed or failed, and how many series are indexed."""
    body = site_client(ctx, url).call("GET", "/api/meta/status")
    if as_json:
        echo_json(body)
        return
    click.echo(f"series indexed  {body['documents']}")
    click.echo(f"waiting         {body['pending']} instances")
    click.echo(f"failed          {body['failed']} instances (see `jip meta errors`)")


@meta.command("errors")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
@url_option
@json_option
@click.pass_context
def errors(ctx: click.Context, limit: int, url: str | None, as_json: bool) -> None:
    """Instances whose header could not be indexed, newest first."""
    body = site_client(ctx, url).call("GET", "/api/meta/errors", params={"limit": limit})
    if as_json:
        echo_json(body)
        return
    click.echo(f"{body['total']} instances failed")
    table(
        ["RECEIVED", "SOP INSTANCE UID", "ERROR"],
        [[e["received_at"][:19], e["sop_instance_uid"], e["error"]] for e in body["errors"]],
    )


@meta.command("reindex")
@click.option("--local", is_flag=True, help="Index in this process, against --data-dir.")
@url_option
@click.pass_context
def reindex(ctx: click.Context, local: bool, url: str | None) -> None:
    """Read every stored header again into the index; search keeps working meanwhile.

    Every instance goes back into the catalog's outbox and is indexed again, replacing
    each series document in place (no second index to build and swap, so no second copy
    of the index on disk, and the same code path as everyday indexing). Documents of
    series the catalog no longer holds are removed.
    """
    if local:
        _reindex_local(settings_from(ctx))
        return
    with site_client(ctx, url) as client:
        started = client.call("POST", "/api/meta/reindex")
        queued, removed = started["queued"], started["removed"]
        click.echo(f"{queued} instances queued, {removed} stale series removed")
        _follow(queued, lambda: int(client.call("GET", "/api/meta/status")["pending"]))
        failed = client.call("GET", "/api/meta/status")["failed"]
    click.echo(f"Done: {failed} instances failed (see `jip meta errors`)." if failed else "Done.")


def _follow(total: int, pending: Any, work: Any = None) -> None:
    """A progress bar until ``pending()`` reaches 0; ``work()`` does a step, else wait
    for the site's indexer (and give up watching if it makes no progress at all)."""
    done, left, moved_at = 0, total, time.monotonic()
    with click.progressbar(length=max(total, 1), label="Reindexing") as bar:
        while True:
            if work is not None:
                work()
            before, left = left, pending()
            if left != before:
                moved_at = time.monotonic()
            elif time.monotonic() - moved_at > STALL_S:
                raise click.ClickException(
                    f"no progress for {STALL_S:.0f} s, {left} instances waiting: is the "
                    "site's indexer running? (`jip up` runs it; `--local` indexes here)"
                )
            now = max(0, min(total, total - left))
            if now > done:
                bar.update(now - done)
                done = now
            if left == 0:
                bar.update(max(total, 1) - done)
                return
            if work is None:
                time.sleep(POLL_S)


@meta.command("rebuild")
@click.pass_context
def rebuild(ctx: click.Context) -> None:
    """Build the index anew from the summaries the catalog keeps, in bulk, against
    --data-dir (no header is read again): after a lost or damaged index, or a change of
    the index's layout. Searches answer from the old contents until the new ones are
    swapped in; a running site's indexer may go on meanwhile. To re-read every header
    instead (a new field extracted), use `jip meta reindex`."""
    from jip.backends import catalog_engine_for, index_for, storage_for
    from jip.meta.indexer import Indexer
    from jip.meta.service import IndexLedger
    from jip.migrations import upgrade
    from jip.store.catalog.catalog import Catalog

    settings = settings_from(ctx)
    upgrade(settings.resolved_catalog_url)
    engine = catalog_engine_for(settings.resolved_catalog_url)
    index = index_for(settings.resolved_index_url)
    try:
        total = len(IndexLedger(engine).series_with_summaries())
        indexer = Indexer(
            catalog=Catalog(engine),
            storage=storage_for(settings.resolved_storage_url, settings),
            index=index,
            batch_size=settings.meta.index_batch_size,
        )
        started = time.monotonic()
        with click.progressbar(length=max(total, 1), label="Rebuilding") as bar:
            seen = [0]

            def advance(loaded: int) -> None:
                bar.update(loaded - seen[0])
                seen[0] = loaded

            held = indexer.rebuild_all(advance)
            bar.update(max(total, 1) - seen[0])
        took = time.monotonic() - started
        click.echo(f"Done: {held} series indexed from {total} with summaries in {took:.1f} s.")
    finally:
        index.close()
        engine.dispose()


def _reindex_local(settings: Settings) -> None:
    from jip.backends import catalog_engine_for, index_for, storage_for
    from jip.meta.indexer import Indexer
    from jip.meta.service import IndexLedger, sweep_orphans
    from jip.migrations import upgrade
    from jip.store.catalog.catalog import Catalog

    upgrade(settings.resolved_catalog_url)
    engine = catalog_engine_for(settings.resolved_catalog_url)
    index = index_for(settings.resolved_index_url)
    try:
        ledger = IndexLedger(engine)
        indexer = Indexer(
            catalog=Catalog(engine),
            storage=storage_for(settings.resolved_storage_url, settings),
            index=index,
            batch_size=settings.meta.index_batch_size,
        )
        queued, removed = ledger.requeue(), sweep_orphans(index, ledger)
        click.echo(f"{queued} instances queued, {removed} stale series removed")
        _follow(queued, lambda: ledger.progress(index).pending, indexer.run_once)
        failed = ledger.progress(index).failed
        click.echo(f"Done: {index.count()} series indexed, {failed} instances failed.")
    finally:
        index.close()
        engine.dispose()


@meta.command("indexer")
@click.pass_context
def indexer(ctx: click.Context) -> None:
    """Run the indexer in the foreground until SIGTERM (the cluster shape's Deployment;
    `jip up` runs it by itself)."""
    from jip.embedded import install_stop_signals, meta_indexer
    from jip.migrations import upgrade

    settings = settings_from(ctx)
    upgrade(settings.resolved_catalog_url)
    component = meta_indexer(settings)
    stop = threading.Event()
    install_stop_signals(stop)
    component.start()
    click.echo(f"Indexing into {component.describe()['index']}; stop with Ctrl-C.")
    try:
        stop.wait()
    finally:
        component.stop()
