"""`jip forward …`: send series to a peer, manage forwarding rules and the dead letters.

Every command talks to the site's HTTP API (:mod:`jip.cli.site`): ``send`` calls
``POST /api/dicom/send`` one series at a time, so a progress bar shows where it is;
the rules and the dead-letter list are ``/api/flow/forwarding`` (site admins).
"""

from __future__ import annotations

import json
import sys
from typing import Any
from urllib.parse import quote

import click

from jip.cli.site import SiteClient, echo_json, json_option, site_client, table, url_option

__all__ = ["forward"]

PAGE = 1000
RULES = "/api/flow/forwarding/rules"
ITEMS = "/api/flow/forwarding/items"


@click.group()
def forward() -> None:
    """Send series to DICOM or DICOMweb peers; forwarding rules and dead letters."""


@forward.command("send")
@click.argument("peer")
@click.option("--series", "series", multiple=True, help="A Series Instance UID (repeat).")
@click.option("--cohort", "cohort_id", default=None, help="Every series of a saved cohort.")
@click.option("--run", "run_id", default=None, help="The DICOM results of a workflow run.")
@url_option
@json_option
@click.pass_context
def send(
    ctx: click.Context,
    peer: str,
    series: tuple[str, ...],
    cohort_id: str | None,
    run_id: str | None,
    url: str | None,
    as_json: bool,
) -> None:
    """Send series to PEER (a name from `jip dicom peers` or forward.dicomweb_peers).

    Needs the right to send (site admins, forward.senders) and to read each series.
    """
    if sum(bool(x) for x in (series, cohort_id, run_id)) != 1:
        raise click.UsageError("name the series with exactly one of --series, --cohort, --run")
    with site_client(ctx, url) as client:
        uids = list(series) or _series_of(client, cohort_id, run_id)
        if not uids:
            raise click.ClickException("nothing to send: the cohort or run has no series")
        reports: list[dict[str, Any]] = []
        with click.progressbar(length=len(uids), label=f"Sending to {peer}", file=sys.stderr) as bar:  # fmt: skip
            for uid in uids:
                body = {"peer": peer, "series": [uid]}
                reports.append(client.call("POST", "/api/dicom/send", json=body))
                bar.update(1)
        rows = [s for report in reports for s in report["series"]]
        if as_json:
            echo_json(rows)
        else:
            table(
                ["series", "sent", "failed", "error"],
                [[r["series_instance_uid"], r["sent"], r["failed"], r["error"]] for r in rows],
            )
        failed = sum(r["failed"] for r in rows)
        if failed:
            raise click.ClickException(f"{failed} instance(s) were not sent (see the errors above)")


def _series_of(client: SiteClient, cohort_id: str | None, run_id: str | None) -> list[str]:
    if run_id is not None:
        results = client.call("GET", f"/api/flow/runs/{quote(run_id, safe='')}/results")
        return sorted({r["result_series_uid"] for r in results if r.get("result_series_uid")})
    assert cohort_id is not None
    uids: list[str] = []
    path = f"/api/meta/cohorts/{quote(cohort_id, safe='')}/series"
    while True:
        params = {"offset": len(uids), "limit": PAGE, "fields": "SeriesInstanceUID"}
        page = client.call("GET", path, params=params)
        uids += [str(hit["SeriesInstanceUID"]) for hit in page["hits"]]
        if not page["hits"] or len(uids) >= page["total"]:
            return uids


@forward.group()
def rules() -> None:
    """Forwarding rules: series matching a cohort query go to a peer (site admins)."""


@rules.command("list")
@url_option
@json_option
@click.pass_context
def list_rules(ctx: click.Context, url: str | None, as_json: bool) -> None:
    """Every forwarding rule and how many of its series are in each state."""
    with site_client(ctx, url) as client:
        found = client.call("GET", RULES)
    if as_json:
        echo_json(found)
        return
    rows = [
        [r["id"], r["name"], r["peer"], json.dumps(r["query"]), r["enabled"], _counts(r["counts"])]
        for r in found
    ]
    table(["id", "name", "peer", "query", "enabled", "series"], rows)


@rules.command("add")
@click.argument("name")
@click.option("--peer", required=True, help="Where matching series go.")
@click.option("--query", default="{}", help='A cohort query as JSON, e.g. \'{"term": {"Modality": "CT"}}\'.')  # fmt: skip
@click.option("--disabled", is_flag=True, help="Store it switched off.")
@url_option
@click.pass_context
def add_rule(
    ctx: click.Context, name: str, peer: str, query: str, disabled: bool, url: str | None
) -> None:
    """Forward every series that becomes complete from now on and matches --query."""
    try:
        parsed = json.loads(query)
    except ValueError as exc:
        raise click.BadParameter(f"not valid JSON ({exc})", param_hint="--query") from None
    body = {"name": name, "peer": peer, "query": parsed, "enabled": not disabled}
    with site_client(ctx, url) as client:
        rule = client.call("POST", RULES, json=body)
    click.echo(f"forwarding rule {rule['id']} ({rule['name']}) sends to {rule['peer']}")


@rules.command("remove")
@click.argument("rule_id", type=int)
@url_option
@click.pass_context
def remove_rule(ctx: click.Context, rule_id: int, url: str | None) -> None:
    """Remove a rule and its queue."""
    with site_client(ctx, url) as client:
        client.call("DELETE", f"{RULES}/{rule_id}")
    click.echo(f"forwarding rule {rule_id} removed")


@forward.command("dead")
@url_option
@json_option
@click.pass_context
def dead(ctx: click.Context, url: str | None, as_json: bool) -> None:
    """The dead letters: series that failed every attempt, with the last error."""
    with site_client(ctx, url) as client:
        found = client.call("GET", ITEMS, params={"state": "dead"})
    if as_json:
        echo_json(found)
        return
    rows = [
        [
            i["id"],
            i["series_instance_uid"],
            i["rule"],
            i["peer"],
            i["attempts"],
            i["updated_at"],
            i["last_error"],
        ]
        for i in found
    ]
    table(["id", "series", "rule", "peer", "attempts", "since", "last error"], rows)


@forward.command("retry")
@click.argument("item_ids", type=int, nargs=-1, required=True)
@url_option
@click.pass_context
def retry(ctx: click.Context, item_ids: tuple[int, ...], url: str | None) -> None:
    """Queue dead letters again (by the ids `jip forward dead` shows)."""
    _change(ctx, url, item_ids, "retry", "queued again")


@forward.command("drop")
@click.argument("item_ids", type=int, nargs=-1, required=True)
@url_option
@click.pass_context
def drop(ctx: click.Context, item_ids: tuple[int, ...], url: str | None) -> None:
    """Give up on dead letters: their rule never sends them."""
    _change(ctx, url, item_ids, "drop", "dropped")


def _change(
    ctx: click.Context, url: str | None, item_ids: tuple[int, ...], action: str, said: str
) -> None:
    with site_client(ctx, url) as client:
        for item_id in item_ids:
            item = client.call("POST", f"{ITEMS}/{item_id}/{action}")
            click.echo(f"{item['series_instance_uid']} → {item['peer']}: {said}")


def _counts(counts: dict[str, Any]) -> str:
    return ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "-"
