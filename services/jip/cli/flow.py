"""`jip flow …`: start workflows, follow them, read their logs and results, manage rules.

Every command talks to the site's HTTP API, found and authorised as :mod:`jip.cli.site`
says (``--url``, ``JIP_API_URL``, the login's site, the running one; ``JIP_API_TOKEN`` or
the token of `jip login`), so it works from any machine.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any
from urllib.parse import quote

import click

from jip.cli.site import (
    SiteClient,
    echo_json,
    json_option,
    parse_params,
    site_client,
    url_option,
)

__all__ = ["flow", "parse_params"]

POLL_S = 2.0


def _run_path(run_id: str) -> str:
    return f"/api/flow/runs/{quote(run_id, safe='')}"


@click.group()
def flow() -> None:
    """Workflows: start them on series, follow runs, read logs and results."""


@flow.command("workflows")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (with parameter schemas).")
@url_option
@click.pass_context
def workflows(ctx: click.Context, url: str | None, as_json: bool) -> None:
    """List the workflows this site can run."""
    with site_client(ctx, url) as client:
        found = client.call("GET", "/api/flow/workflows")
    if as_json:
        echo_json(found)
        return
    for w in found:
        params = ", ".join(k for k in w["params_schema"].get("properties", {}) if k != "series")
        click.echo(f"{w['dag_id']:<24} {w.get('description') or ''}  [params: {params or '-'}]")


@flow.command("run")
@click.argument("dag_id")
@click.option("--cohort", "cohort_id", help="A saved cohort's id.")
@click.option("--series", "series", multiple=True, help="A Series Instance UID (repeat).")
@click.option("--param", "params", multiple=True, help="k=v or operator.k=v (JSON values).")
@click.option("--wait", is_flag=True, help="Wait for the run to end, with a progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the final run and results as JSON.")
@click.option("--timeout", type=float, default=None, help="Stop waiting after this many seconds.")
@url_option
@click.pass_context
def run(
    ctx: click.Context,
    url: str | None,
    dag_id: str,
    cohort_id: str | None,
    series: tuple[str, ...],
    params: tuple[str, ...],
    wait: bool,
    as_json: bool,
    timeout: float | None,
) -> None:
    """Start workflow DAG_ID on a cohort or on series."""
    if bool(cohort_id) == bool(series):
        raise click.UsageError("give either --cohort or at least one --series")
    body = {"series": list(series), "cohort_id": cohort_id, "params": parse_params(params)}
    with site_client(ctx, url) as client:
        started = client.call(
            "POST", f"/api/flow/workflows/{quote(dag_id, safe='')}/runs", json=body
        )
        run_id = started["run_id"]
        if not wait:
            if as_json:
                echo_json(started)
            else:
                click.echo(f"started {dag_id} run {run_id}")
            return
        if not as_json:
            click.echo(f"started {dag_id} run {run_id}", err=True)
        detail = _follow(client, run_id, timeout, show=not as_json)
        results = client.call("GET", f"{_run_path(run_id)}/results")
    if as_json:
        echo_json({"run": detail, "results": results})
    else:
        _print_run(detail, results)
    if detail["state"] != "success":
        sys.exit(1)


def _follow(client: SiteClient, run_id: str, timeout: float | None, *, show: bool) -> Any:
    """Poll the run until it ends; a progress bar over finished tasks on stderr."""
    from tqdm import tqdm

    deadline = None if timeout is None else time.monotonic() + timeout
    with tqdm(total=1, unit="task", file=sys.stderr, disable=not show, leave=True) as bar:
        while True:
            detail = client.call("GET", _run_path(run_id))
            bar.total = max(detail["tasks_total"], 1)
            bar.n = detail["tasks_finished"]
            bar.set_postfix_str(detail["state"])
            bar.refresh()
            if detail["state"] in ("success", "failed", "cancelled"):
                return detail
            if deadline is not None and time.monotonic() > deadline:
                raise click.ClickException(
                    f"run {run_id} still {detail['state']} after {timeout} s"
                )
            time.sleep(POLL_S)


def _print_run(detail: dict[str, Any], results: list[dict[str, Any]]) -> None:
    click.echo(f"run {detail['run_id']} of {detail['dag_id']}: {detail['state']}")
    for item in detail.get("per_series", []):
        steps = "  ".join(f"{task}={state}" for task, state in item["tasks"].items())
        click.echo(f"  {item['series_instance_uid']}  {item['state']}  {steps}")
    for r in results:
        where = r["result_series_uid"] if r["kind"] == "dicom" else r["name"]
        click.echo(
            f"  result {r['id']}: {r['operator']} {r['kind']} {where} ({r['size_bytes']} bytes) {r['url']}"
        )


@flow.command("runs")
@click.option("--dag", "dag_id", default=None, help="Only runs of this workflow.")
@click.option("--limit", type=int, default=20, show_default=True)
@json_option
@url_option
@click.pass_context
def runs(
    ctx: click.Context, url: str | None, dag_id: str | None, limit: int, as_json: bool
) -> None:
    """The newest runs first."""
    query: dict[str, Any] = {"limit": limit}
    if dag_id:
        query["dag_id"] = dag_id
    with site_client(ctx, url) as client:
        found = client.call("GET", "/api/flow/runs", params=query)
    if as_json:
        echo_json(found)
        return
    for r in found:
        click.echo(
            f"{r['run_id']:<40} {r['dag_id']:<24} {r['state']:<10} {len(r['series'])} series  {r.get('started_at') or ''}"
        )


@flow.command("status")
@click.argument("run_id")
@json_option
@url_option
@click.pass_context
def status(ctx: click.Context, url: str | None, run_id: str, as_json: bool) -> None:
    """One run: its state per series and task, and its results."""
    with site_client(ctx, url) as client:
        detail = client.call("GET", _run_path(run_id))
        results = client.call("GET", f"{_run_path(run_id)}/results")
    if as_json:
        echo_json({"run": detail, "results": results})
    else:
        _print_run(detail, results)


@flow.command("logs")
@click.argument("run_id")
@click.option("--task", default=None, help="Only this task (e.g. organ-seg).")
@click.option("--series", default=None, help="Only this series' instances.")
@url_option
@click.pass_context
def logs(
    ctx: click.Context, url: str | None, run_id: str, task: str | None, series: str | None
) -> None:
    """Print the logs of a run's tasks."""
    query = {k: v for k, v in (("task", task), ("series", series)) if v}
    with site_client(ctx, url) as client:
        click.echo(client.call("GET", f"{_run_path(run_id)}/logs", params=query))


@flow.command("cancel")
@click.argument("run_id")
@url_option
@click.pass_context
def cancel(ctx: click.Context, url: str | None, run_id: str) -> None:
    """Stop a run: running tasks stop, the rest are skipped."""
    with site_client(ctx, url) as client:
        answer = client.call("POST", f"{_run_path(run_id)}/cancel")
    click.echo(f"run {run_id}: {answer['state']}")


# -- auto-rules ------------------------------------------------------------------------------


@flow.group("rules")
def rules() -> None:
    """Auto-rules: start a workflow when a complete series matches a cohort query."""


@rules.command("add")
@click.argument("name")
@click.option("--workflow", "dag_id", required=True, help="The workflow to start.")
@click.option("--query", default="{}", show_default=True, help="A cohort query (JSON).")
@click.option("--param", "params", multiple=True, help="k=v or operator.k=v (JSON values).")
@click.option("--disabled", is_flag=True, help="Add it switched off.")
@url_option
@click.pass_context
def rules_add(
    ctx: click.Context,
    url: str | None,
    name: str,
    dag_id: str,
    query: str,
    params: tuple[str, ...],
    disabled: bool,
) -> None:
    """Add rule NAME (site admins)."""
    try:
        parsed = json.loads(query)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--query") from exc
    body = {
        "name": name,
        "dag_id": dag_id,
        "query": parsed,
        "params": parse_params(params),
        "enabled": not disabled,
    }
    with site_client(ctx, url) as client:
        rule = client.call("POST", "/api/flow/rules", json=body)
    click.echo(
        f"rule {rule['name']} (id {rule['id']}): {'enabled' if rule['enabled'] else 'disabled'}"
    )


@rules.command("list")
@json_option
@url_option
@click.pass_context
def rules_list(ctx: click.Context, url: str | None, as_json: bool) -> None:
    """The site's rules and how often each fired."""
    with site_client(ctx, url) as client:
        found = client.call("GET", "/api/flow/rules")
    if as_json:
        echo_json(found)
        return
    for r in found:
        state = "enabled" if r["enabled"] else "disabled"
        click.echo(
            f"{r['id']:>4} {r['name']:<24} {r['dag_id']:<24} {state:<9} fired {r['firings']}x  {json.dumps(r['query'])}"
        )


def _set_enabled(ctx: click.Context, url: str | None, name: str, enabled: bool) -> None:
    with site_client(ctx, url) as client:
        rule = client.call(
            "PATCH", f"/api/flow/rules/{quote(name, safe='')}", json={"enabled": enabled}
        )
    click.echo(f"rule {rule['name']}: {'enabled' if rule['enabled'] else 'disabled'}")


@rules.command("enable")
@click.argument("name")
@url_option
@click.pass_context
def rules_enable(ctx: click.Context, url: str | None, name: str) -> None:
    """Switch rule NAME (or id) on."""
    _set_enabled(ctx, url, name, True)


@rules.command("disable")
@click.argument("name")
@url_option
@click.pass_context
def rules_disable(ctx: click.Context, url: str | None, name: str) -> None:
    """Switch rule NAME (or id) off."""
    _set_enabled(ctx, url, name, False)


@rules.command("remove")
@click.argument("name")
@url_option
@click.pass_context
def rules_remove(ctx: click.Context, url: str | None, name: str) -> None:
    """Delete rule NAME (or id) and its firing records."""
    with site_client(ctx, url) as client:
        client.call("DELETE", f"/api/flow/rules/{quote(name, safe='')}")
    click.echo(f"rule {name} removed")
