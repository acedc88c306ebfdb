"""`jip meta reindex|status|errors|indexer`: the metadata index of a site.

The commands talk to the running site over HTTP (its URL from the state file `jip up`
writes, ``api_url``, or ``--url``) with the token of `jip login` (or ``JIP_API_TOKEN``).
`jip meta reindex --local` and `jip meta indexer` work on the data dir directly.

    jip meta status
    jip meta errors --limit 20
    jip meta reindex            # the running site re-reads every header; search goes on
    jip meta reindex --local    # the same, in this process, against --data-dir
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import click
import httpx

from jip.cli.main import settings_from
from jip.config import Settings

_WILDCARD_HOSTS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}
POLL_S = 0.5
STALL_S = 120.0


# -- talking to the site -------------------------------------------------------------------
class SiteClient:
    """JSON over HTTP to one site; HTTP errors become messages, not tracebacks."""

    def __init__(self, base_url: str, headers: dict[str, str]) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(base_url=self.base_url, headers=headers, timeout=300)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise click.ClickException(f"cannot reach {self.base_url}: {exc}") from None
        if response.status_code >= 400:
            raise click.ClickException(f"{_detail(response)} (HTTP {response.status_code})")
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def close(self) -> None:
        self.http.close()


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase
    return str(body.get("detail", body)) if isinstance(body, dict) else str(body)


def site_url_of(settings: Settings, url: str | None) -> str:
    """``--url``, else the running site's URL from the state file, else ``api_url``."""
    from jip.base.identity import site_url

    if url:
        return url.rstrip("/")
    if settings.state_file.exists():
        state = json.loads(settings.state_file.read_text())
        parsed = httpx.URL(state["http"])
        host = _WILDCARD_HOSTS.get(parsed.host, parsed.host)
        return str(parsed.copy_with(host=host)).rstrip("/")
    return (settings.api_url or site_url(settings)).rstrip("/")


def site_client(ctx: click.Context, url: str | None) -> SiteClient:
    """A client for the site with this user's token (none if not logged in: a site with
    auth disabled takes that, one with auth enabled answers that a login is needed)."""
    from jip.cli.user import auth_headers

    settings = settings_from(ctx)
    if settings.api_token is not None:
        headers = {"Authorization": f"Bearer {settings.api_token.get_secret_value()}"}
    else:
        try:
            headers = auth_headers()
        except click.ClickException:
            headers = {}
    return SiteClient(site_url_of(settings, url), headers)


url_option = click.option("--url", default=None, help="The site (default: the running one).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def table(headers: list[str], rows: list[list[Any]]) -> None:
    """Rows under headers, columns as wide as their widest cell."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    for row in [headers, *cells]:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return "\\".join(map(str, value))
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


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
    client = site_client(ctx, url)
    started = client.call("POST", "/api/meta/reindex")
    click.echo(f"{started['queued']} instances queued, {started['removed']} stale series removed")
    _follow(started["queued"], lambda: int(client.call("GET", "/api/meta/status")["pending"]))
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
    from jip.embedded import install_stop_signals
    from jip.meta.indexer import MetaIndexer
    from jip.migrations import upgrade

    settings = settings_from(ctx)
    upgrade(settings.resolved_catalog_url)
    component = MetaIndexer(settings)
    stop = threading.Event()
    install_stop_signals(stop)
    component.start()
    click.echo(f"Indexing into {component.describe()['index']}; stop with Ctrl-C.")
    try:
        stop.wait()
    finally:
        component.stop()
