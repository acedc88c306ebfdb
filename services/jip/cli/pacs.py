"""`jip dicom saved-query …` and `jip dicom retrieve`: the PACS page from the terminal.

Every command talks to the site's HTTP API (:mod:`jip.cli.site`), ``/api/dicom/...``,
which is for site admins. ``retrieve`` and ``saved-query run --wait`` follow the
retrieval with a progress bar of the instances the peer reports.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from jip.cli.site import SiteClient, echo_json, json_option, site_client, table, url_option

__all__ = ["retrieve", "saved_query"]

SAVED = "/api/dicom/saved-queries"
RETRIEVALS = "/api/dicom/retrievals"
POLL_S = 1.0


def _query_options(command: Any) -> Any:
    """The study query's fields as options (empty: any value)."""
    for name, help_text in reversed(
        [
            ("--patient-name", "Patient name; a prefix unless it has * or ? (Doe^J*)."),
            ("--patient-id", "Patient ID."),
            ("--date-from", "Study date from (YYYY-MM-DD)."),
            ("--date-to", "Study date to (YYYY-MM-DD)."),
            ("--modality", "A modality in the study (CT, MR, ...)."),
            ("--accession", "Accession number."),
        ]
    ):
        command = click.option(name, default="", help=help_text)(command)
    return command


@click.group("saved-query")
def saved_query() -> None:
    """Queries of a DICOM peer that run every night and retrieve what is new."""


@saved_query.command("add")
@click.argument("name")
@click.option("--peer", required=True, help="A peer's name (`jip dicom peers`).")
@click.option("--project", required=True, help="The project the studies go into.")
@click.option("--at", "run_at", default="02:00", show_default=True, help="Every day at HH:MM, UTC.")
@_query_options
@url_option
@json_option
@click.pass_context
def add(
    ctx: click.Context, name: str, peer: str, project: str, run_at: str, **options: Any
) -> None:
    """Save a query NAME of PEER, run daily at --at, retrieving new studies into PROJECT."""
    url, as_json = options.pop("url"), options.pop("as_json")
    query = {
        "patient_name": options["patient_name"],
        "patient_id": options["patient_id"],
        "study_date_from": options["date_from"],
        "study_date_to": options["date_to"],
        "modality": options["modality"],
        "accession_number": options["accession"],
    }
    body = {"name": name, "peer": peer, "project": project, "run_at": run_at, "query": query}
    with site_client(ctx, url) as client:
        created = client.call("POST", SAVED, json=body)
    if as_json:
        echo_json(created)
    else:
        click.echo(f"saved query {created['id']} {name!r}: next run {created['next_run_at']}")


@saved_query.command("list")
@url_option
@json_option
@click.pass_context
def list_(ctx: click.Context, url: str | None, as_json: bool) -> None:
    """The saved queries and when each runs next."""
    with site_client(ctx, url) as client:
        rows = client.call("GET", SAVED)
    if as_json:
        echo_json(rows)
        return
    table(
        ["id", "name", "peer", "project", "at (UTC)", "next run", "query"],
        [
            [r["id"], r["name"], r["peer"], r["project"], r["run_at"], r["next_run_at"],
             " ".join(f"{k}={v}" for k, v in r["query"].items() if v) or "any"]
            for r in rows
        ],
    )  # fmt: skip


@saved_query.command("run")
@click.argument("query_id", type=int)
@click.option("--wait/--no-wait", default=True, show_default=True, help="Follow the run.")
@click.option("--timeout", "timeout_s", default=3600.0, show_default=True, help="Seconds to wait.")
@url_option
@json_option
@click.pass_context
def run(
    ctx: click.Context, query_id: int, wait: bool, timeout_s: float, url: str | None, as_json: bool
) -> None:
    """Run saved query QUERY_ID now (the site's scheduler picks it up within its interval)."""
    with site_client(ctx, url) as client:
        before = {r["id"] for r in _runs(client, query_id)}
        client.call("POST", f"{SAVED}/{query_id}/run")
        if not wait:
            click.echo(f"saved query {query_id} is due: `jip up` runs it at its next look")
            return
        deadline = time.monotonic() + timeout_s
        while True:
            new = [r for r in _runs(client, query_id) if r["id"] not in before]
            if new:
                break
            if time.monotonic() > deadline:
                raise click.ClickException("no run started: is `jip up` running on the site?")
            time.sleep(POLL_S)
        done = _follow(client, new[0]["id"], deadline)
    _report(done, as_json)


@saved_query.command("remove")
@click.argument("query_id", type=int)
@url_option
@click.pass_context
def remove(ctx: click.Context, query_id: int, url: str | None) -> None:
    """Remove saved query QUERY_ID (its past runs stay listed)."""
    with site_client(ctx, url) as client:
        client.call("DELETE", f"{SAVED}/{query_id}")
    click.echo(f"saved query {query_id} removed")


@click.command("retrieve")
@click.argument("peer")
@click.argument("study_uids", nargs=-1, required=True)
@click.option("--project", required=True, help="The project the studies go into.")
@click.option("--timeout", "timeout_s", default=3600.0, show_default=True, help="Seconds to wait.")
@url_option
@json_option
@click.pass_context
def retrieve(
    ctx: click.Context,
    peer: str,
    study_uids: tuple[str, ...],
    project: str,
    timeout_s: float,
    url: str | None,
    as_json: bool,
) -> None:
    """Retrieve studies (Study Instance UIDs) from PEER into --project, with progress."""
    body = {"peer": peer, "project": project, "study_instance_uids": list(study_uids)}
    with site_client(ctx, url) as client:
        created = client.call("POST", RETRIEVALS, json=body)
        done = _follow(client, created["id"], time.monotonic() + timeout_s)
    _report(done, as_json)


def _runs(client: SiteClient, query_id: int) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = client.call("GET", RETRIEVALS, params={"saved_query": query_id})
    return runs


def _follow(client: SiteClient, retrieval_id: str, deadline: float) -> dict[str, Any]:
    """Poll the retrieval until it ends, drawing its instances on a progress bar."""
    shown = 0
    with click.progressbar(length=0, label="Retrieving", file=sys.stderr, show_pos=True) as bar:
        while True:
            state: dict[str, Any] = client.call("GET", f"{RETRIEVALS}/{retrieval_id}")
            done = state["completed"] + state["failed"] + state["warning"]
            bar.length = max(done + state["remaining"], bar.length or 0, 1)
            bar.update(done - shown)
            shown = done
            if state["state"] not in ("queued", "running"):
                return state
            if time.monotonic() > deadline:
                raise click.ClickException(f"retrieval {retrieval_id} still {state['state']}")
            time.sleep(POLL_S)


def _report(state: dict[str, Any], as_json: bool) -> None:
    if as_json:
        echo_json(state)
    else:
        click.echo(
            f"{state['state']}: {state['studies_done']} of {len(state['study_uids'])} studies, "
            f"{state['completed']} instances retrieved, {state['failed']} failed"
            + (f", {state['skipped']} of {state['found']} already here" if state["skipped"] else "")
        )
    if state["state"] != "done" or state["failed"]:
        raise click.ClickException(state["error"] or f"{state['failed']} instance(s) failed")
