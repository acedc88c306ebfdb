"""`jip flow …`: start workflows, follow them, read their logs and results, manage rules.

Every command talks to the site's HTTP API (``api_url``, else the site's own URL) with
the token of `jip login` (or ``JIP_API_TOKEN``), so it works from any machine.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import click
import httpx

from jip.cli.main import settings_from

POLL_S = 2.0


@contextmanager
def api(ctx: click.Context) -> Iterator[httpx.Client]:
    """An HTTP client of the site's API with the caller's token."""
    from jip.cli.user import bearer_token, token_path
    from jip.flow.worker.api_client import api_url_of

    settings = settings_from(ctx)
    headers = {}
    if token_path().exists():
        headers["Authorization"] = f"Bearer {bearer_token()}"
    elif settings.api_token is not None:
        headers["Authorization"] = f"Bearer {settings.api_token.get_secret_value()}"
    with httpx.Client(base_url=api_url_of(settings), headers=headers, timeout=60) as client:
        yield client


def call(client: httpx.Client, method: str, path: str, **kwargs: Any) -> Any:
    """The JSON answer, or a ClickException with the server's message."""
    try:
        response = client.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        raise click.ClickException(f"JIP at {client.base_url} is not reachable: {exc}") from exc
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        raise click.ClickException(f"{response.status_code}: {detail}")
    if not response.content:
        return None
    if response.headers.get("content-type", "").startswith("application/json"):
        return response.json()
    return response.text


def parse_params(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``k=v`` pairs; ``op.key=v`` sets a key of an operator's object; v is JSON or text."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not key=value", param_hint="--param")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        target = params
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
            if not isinstance(target, dict):
                raise click.BadParameter(
                    f"{key!r}: {parent} is not an object", param_hint="--param"
                )
        target[leaf] = value
    return params


def _run_path(run_id: str) -> str:
    return f"/api/flow/runs/{quote(run_id, safe='')}"


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


@click.group()
def flow() -> None:
    """Workflows: start them on series, follow runs, read logs and results."""


@flow.command("workflows")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (with parameter schemas).")
@click.pass_context
def workflows(ctx: click.Context, as_json: bool) -> None:
    """List the workflows this site can run."""
    with api(ctx) as client:
        found = call(client, "GET", "/api/flow/workflows")
    if as_json:
        _echo_json(found)
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
@click.pass_context
def run(
    ctx: click.Context,
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
    with api(ctx) as client:
        started = call(
            client, "POST", f"/api/flow/workflows/{quote(dag_id, safe='')}/runs", json=body
        )
        run_id = started["run_id"]
        if not wait:
            if as_json:
                _echo_json(started)
            else:
                click.echo(f"started {dag_id} run {run_id}")
            return
        if not as_json:
            click.echo(f"started {dag_id} run {run_id}", err=True)
        detail = _follow(client, run_id, timeout, show=not as_json)
        results = call(client, "GET", f"{_run_path(run_id)}/results")
    if as_json:
        _echo_json({"run": detail, "results": results})
    else:
        _print_run(detail, results)
    if detail["state"] != "success":
        sys.exit(1)


def _follow(client: httpx.Client, run_id: str, timeout: float | None, *, show: bool) -> Any:
    """Poll the run until it ends; a progress bar over finished tasks on stderr."""
    from tqdm import tqdm

    deadline = None if timeout is None else time.monotonic() + timeout
    with tqdm(total=1, unit="task", file=sys.stderr, disable=not show, leave=True) as bar:
        while True:
            detail = call(client, "GET", _run_path(run_id))
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
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def runs(ctx: click.Context, dag_id: str | None, limit: int, as_json: bool) -> None:
    """The newest runs first."""
    query: dict[str, Any] = {"limit": limit}
    if dag_id:
        query["dag_id"] = dag_id
    with api(ctx) as client:
        found = call(client, "GET", "/api/flow/runs", params=query)
    if as_json:
        _echo_json(found)
        return
    for r in found:
        click.echo(
            f"{r['run_id']:<40} {r['dag_id']:<24} {r['state']:<10} {len(r['series'])} series  {r.get('started_at') or ''}"
        )


@flow.command("status")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def status(ctx: click.Context, run_id: str, as_json: bool) -> None:
    """One run: its state per series and task, and its results."""
    with api(ctx) as client:
        detail = call(client, "GET", _run_path(run_id))
        results = call(client, "GET", f"{_run_path(run_id)}/results")
    if as_json:
        _echo_json({"run": detail, "results": results})
    else:
        _print_run(detail, results)


@flow.command("logs")
@click.argument("run_id")
@click.option("--task", default=None, help="Only this task (e.g. organ-seg).")
@click.option("--series", default=None, help="Only this series' instances.")
@click.pass_context
def logs(ctx: click.Context, run_id: str, task: str | None, series: str | None) -> None:
    """Print the logs of a run's tasks."""
    query = {k: v for k, v in (("task", task), ("series", series)) if v}
    with api(ctx) as client:
        click.echo(call(client, "GET", f"{_run_path(run_id)}/logs", params=query))


@flow.command("cancel")
@click.argument("run_id")
@click.pass_context
def cancel(ctx: click.Context, run_id: str) -> None:
    """Stop a run: running tasks stop, the rest are skipped."""
    with api(ctx) as client:
        answer = call(client, "POST", f"{_run_path(run_id)}/cancel")
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
@click.pass_context
def rules_add(
    ctx: click.Context, name: str, dag_id: str, query: str, params: tuple[str, ...], disabled: bool
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
    with api(ctx) as client:
        rule = call(client, "POST", "/api/flow/rules", json=body)
    click.echo(
        f"rule {rule['name']} (id {rule['id']}): {'enabled' if rule['enabled'] else 'disabled'}"
    )


@rules.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def rules_list(ctx: click.Context, as_json: bool) -> None:
    """The site's rules and how often each fired."""
    with api(ctx) as client:
        found = call(client, "GET", "/api/flow/rules")
    if as_json:
        _echo_json(found)
        return
    for r in found:
        state = "enabled" if r["enabled"] else "disabled"
        click.echo(
            f"{r['id']:>4} {r['name']:<24} {r['dag_id']:<24} {state:<9} fired {r['firings']}x  {json.dumps(r['query'])}"
        )


def _set_enabled(ctx: click.Context, name: str, enabled: bool) -> None:
    with api(ctx) as client:
        rule = call(
            client, "PATCH", f"/api/flow/rules/{quote(name, safe='')}", json={"enabled": enabled}
        )
    click.echo(f"rule {rule['name']}: {'enabled' if rule['enabled'] else 'disabled'}")


@rules.command("enable")
@click.argument("name")
@click.pass_context
def rules_enable(ctx: click.Context, name: str) -> None:
    """Switch rule NAME (or id) on."""
    _set_enabled(ctx, name, True)


@rules.command("disable")
@click.argument("name")
@click.pass_context
def rules_disable(ctx: click.Context, name: str) -> None:
    """Switch rule NAME (or id) off."""
    _set_enabled(ctx, name, False)


@rules.command("remove")
@click.argument("name")
@click.pass_context
def rules_remove(ctx: click.Context, name: str) -> None:
    """Delete rule NAME (or id) and its firing records."""
    with api(ctx) as client:
        call(client, "DELETE", f"/api/flow/rules/{quote(name, safe='')}")
    click.echo(f"rule {name} removed")
