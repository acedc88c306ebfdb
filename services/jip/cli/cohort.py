"""`jip cohort …`: search a site's series by metadata and keep cohorts.

Queries are cohort-language JSON (the OpenSearch query DSL subset of DESIGN.md), given
inline, as ``@file.json``, or ``-`` for stdin. Tables by default, JSON with ``--json``.

    jip cohort search '{"term": {"Modality": "CT"}}' --aggs '{"m": {"terms": {"field": "Manufacturer"}}}'
    jip cohort save "CT abdomen" --query @ct.json --project liver --freeze
    jip cohort list
    jip cohort export 3f2a… -o ct-abdomen.json
    jip cohort import ct-abdomen.json --project liver
    jip cohort download "CT abdomen" ct-abdomen.zip --format nifti
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
import httpx

from jip.cli.site import echo_json, json_option, site_client, table, url_option
from jip.errors import detail_of

DEFAULT_COLUMNS = [
    "StudyDate",
    "Modality",
    "BodyPartExamined",
    "Manufacturer",
    "SliceThickness",
    "PatientAgeYears",
    "NumberOfInstances",
    "SeriesInstanceUID",
]


def read_json(text: str, what: str) -> Any:
    """JSON given inline, as ``@path``, or ``-`` (stdin)."""
    if text == "-":
        text = sys.stdin.read()
    elif text.startswith("@"):
        try:
            text = Path(text[1:]).read_text()
        except OSError as exc:
            raise click.BadParameter(f"cannot read {text[1:]}: {exc}", param_hint=what) from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint=what) from None


def _hits_table(hits: list[dict[str, Any]], columns: list[str]) -> None:
    table([c.upper() for c in columns], [[hit.get(c) for c in columns] for hit in hits])


def _aggregations(aggregations: dict[str, Any]) -> None:
    for name, result in aggregations.items():
        click.echo(f"\n{name}:")
        if "value" in result:
            click.echo(f"  {result['value']} distinct values")
            continue
        rows = [[b.get("key_as_string", b.get("key")), b["doc_count"]] for b in result["buckets"]]
        table(["  VALUE", "SERIES"], [[f"  {k}", n] for k, n in rows])
        other = result.get("sum_other_doc_count")
        if other:
            click.echo(f"  (other values: {other})")


def _cohort_rows(cohorts: list[dict[str, Any]]) -> None:
    table(
        ["ID", "NAME", "PROJECT", "FROZEN", "CREATED BY", "CREATED"],
        [
            [
                c["id"],
                c["name"],
                c["project"],
                f"{c['frozen_series']} series" if c["frozen"] else "no",
                c["created_by"],
                c["created_at"][:19],
            ]
            for c in cohorts
        ],
    )


@click.group()
def cohort() -> None:
    """Search series by DICOM metadata; save, share and export cohorts."""


@cohort.command("search")
@click.argument("query")
@click.option("--aggs", default=None, help="Aggregations (facets) as JSON.")
@click.option("--sort", default=None, help='Sort as JSON, e.g. \'[{"StudyDate": "desc"}]\'.')
@click.option("--fields", default=None, help="Comma-separated fields to show.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(0, 10000))
@click.option("--offset", default=0, show_default=True, type=click.IntRange(0, 10000))
@url_option
@json_option
@click.pass_context
def search(
    ctx: click.Context,
    query: str,
    aggs: str | None,
    sort: str | None,
    fields: str | None,
    limit: int,
    offset: int,
    url: str | None,
    as_json: bool,
) -> None:
    """Series matching QUERY (cohort-language JSON), with facet counts for --aggs."""
    columns = [f.strip() for f in fields.split(",") if f.strip()] if fields else None
    body: dict[str, Any] = {
        "query": read_json(query, "QUERY"),
        "limit": limit,
        "offset": offset,
        "fields": columns,
    }
    if aggs:
        body["aggs"] = read_json(aggs, "--aggs")
    if sort:
        body["sort"] = read_json(sort, "--sort")
    found = site_client(ctx, url).call("POST", "/api/meta/search", json=body)
    if as_json:
        echo_json(found)
        return
    shown = len(found["hits"])
    click.echo(
        f"{found['total']} series match"
        + (f" (showing {offset + 1}-{offset + shown})" if shown else "")
    )
    if shown:
        _hits_table(found["hits"], columns or DEFAULT_COLUMNS)
    _aggregations(found.get("aggregations") or {})


@cohort.command("save")
@click.argument("name")
@click.option("--query", "query_text", required=True, help="The cohort query as JSON.")
@click.option("--description", default="", help="What the cohort is for.")
@click.option("--project", default=None, help="The owner project (default: your only one).")
@click.option("--freeze", is_flag=True, help="Also keep the series it matches now.")
@url_option
@json_option
@click.pass_context
def save(
    ctx: click.Context,
    name: str,
    query_text: str,
    description: str,
    project: str | None,
    freeze: bool,
    url: str | None,
    as_json: bool,
) -> None:
    """Save a cohort query under NAME."""
    body = {
        "name": name,
        "description": description,
        "project": project,
        "query": read_json(query_text, "--query"),
        "freeze": freeze,
    }
    saved = site_client(ctx, url).call("POST", "/api/meta/cohorts", json=body)
    if as_json:
        echo_json(saved)
        return
    frozen = f", frozen with {saved['frozen_series']} series" if saved["frozen"] else ""
    click.echo(
        f"Saved cohort {saved['name']!r} in project {saved['project']}{frozen}: {saved['id']}"
    )


@cohort.command("list")
@click.option("--project", default=None, help="Only this project's cohorts.")
@url_option
@json_option
@click.pass_context
def list_cohorts(ctx: click.Context, project: str | None, url: str | None, as_json: bool) -> None:
    """The cohorts of your projects."""
    params = {"project": project} if project else None
    cohorts = site_client(ctx, url).call("GET", "/api/meta/cohorts", params=params)
    if as_json:
        echo_json(cohorts)
        return
    _cohort_rows(cohorts)


@cohort.command("show")
@click.argument("cohort_id")
@click.option("--series", "with_series", is_flag=True, help="Also list its series.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(0, 10000))
@url_option
@json_option
@click.pass_context
def show(
    ctx: click.Context,
    cohort_id: str,
    with_series: bool,
    limit: int,
    url: str | None,
    as_json: bool,
) -> None:
    """One cohort: its query, owner, whether it is frozen (and its series)."""
    client = site_client(ctx, url)
    info = client.call("GET", f"/api/meta/cohorts/{cohort_id}")
    series = None
    if with_series:
        series = client.call(
            "GET", f"/api/meta/cohorts/{cohort_id}/series", params={"limit": limit}
        )
    if as_json:
        echo_json({**info, "series": series} if series is not None else info)
        return
    for key in ("id", "name", "description", "project", "created_by", "created_at", "source_site"):
        click.echo(f"{key:<12} {info[key] or '-'}")
    click.echo(
        f"{'frozen':<12} "
        + (
            f"{info['frozen_series']} series at {info['frozen_at']}"
            if info["frozen"]
            else "no (the query runs on each use)"
        )
    )
    click.echo(f"query\n{json.dumps(info['query'], indent=2, ensure_ascii=False)}")
    if series is not None:
        click.echo(f"\n{series['total']} series")
        _hits_table(series["hits"], DEFAULT_COLUMNS)


@cohort.command("export")
@click.argument("cohort_id")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Write to this file (default: stdout).",
)
@click.option(
    "--include-series",
    is_flag=True,
    help="Add the series UIDs (site-specific: only for sites sharing an archive).",
)
@url_option
@click.pass_context
def export(
    ctx: click.Context, cohort_id: str, output: str | None, include_series: bool, url: str | None
) -> None:
    """The cohort as a JSON document that any site can import."""
    document = site_client(ctx, url).call(
        "GET",
        f"/api/meta/cohorts/{cohort_id}/export",
        params={"include_series": "true" if include_series else "false"},
    )
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if output is None:
        click.echo(text, nl=False)
        return
    Path(output).write_text(text)
    click.echo(f"Exported cohort {document['name']!r} to {output}")


@cohort.command("import")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--project", default=None, help="The owner project (default: your only one).")
@click.option("--name", default=None, help="Save it under another name.")
@url_option
@json_option
@click.pass_context
def import_cohort(
    ctx: click.Context,
    file: str,
    project: str | None,
    name: str | None,
    url: str | None,
    as_json: bool,
) -> None:
    """Save a cohort exported by this or another site."""
    document = read_json("-" if file == "-" else f"@{file}", "FILE")
    params = {k: v for k, v in (("project", project), ("name", name)) if v is not None}
    saved = site_client(ctx, url).call(
        "POST", "/api/meta/cohorts/import", json=document, params=params
    )
    if as_json:
        echo_json(saved)
        return
    click.echo(f"Imported cohort {saved['name']!r} into project {saved['project']}: {saved['id']}")


@cohort.command("freeze")
@click.argument("cohort_id")
@url_option
@click.pass_context
def freeze(ctx: click.Context, cohort_id: str, url: str | None) -> None:
    """Keep the series the cohort's query matches now."""
    info = site_client(ctx, url).call("POST", f"/api/meta/cohorts/{cohort_id}/freeze")
    click.echo(f"Frozen {info['name']!r} with {info['frozen_series']} series.")


@cohort.command("unfreeze")
@click.argument("cohort_id")
@url_option
@click.pass_context
def unfreeze(ctx: click.Context, cohort_id: str, url: str | None) -> None:
    """Let the cohort follow its query again."""
    info = site_client(ctx, url).call("POST", f"/api/meta/cohorts/{cohort_id}/unfreeze")
    click.echo(f"Unfrozen {info['name']!r}: its query runs on each use.")


@cohort.command("delete")
@click.argument("cohort_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@url_option
@click.pass_context
def delete(ctx: click.Context, cohort_id: str, yes: bool, url: str | None) -> None:
    """Delete a saved cohort (the series stay)."""
    if not yes:
        click.confirm(f"Delete cohort {cohort_id}?", abort=True)
    site_client(ctx, url).call("DELETE", f"/api/meta/cohorts/{cohort_id}")
    click.echo(f"Deleted cohort {cohort_id}.")


@cohort.command("download")
@click.argument("cohort_ref", metavar="COHORT")
@click.argument("output", type=click.Path(dir_okay=False, writable=True, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["dicom", "nifti"]),
    default="dicom",
    show_default=True,
    help="dicom: the instances as stored; nifti: one .nii.gz per image series.",
)
@url_option
@click.pass_context
def download(ctx: click.Context, cohort_ref: str, output: Path, fmt: str, url: str | None) -> None:
    """Download a cohort (by id or name) as a zip; only series of your projects are in it."""
    with site_client(ctx, url) as client:
        cohort_id = _cohort_id(client.call("GET", "/api/meta/cohorts"), cohort_ref)
        partial = output.with_name(f".{output.name}.partial")
        try:
            _stream_to(client.http, f"/api/meta/cohorts/{cohort_id}/download", fmt, partial)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    partial.replace(output)  # only a whole zip gets the name asked for
    click.echo(f"Downloaded cohort {cohort_ref!r} to {output} ({output.stat().st_size} bytes)")


def _stream_to(http: httpx.Client, path: str, fmt: str, target: Path) -> None:
    """The zip at ``path`` into ``target``, with a progress bar over the stored bytes."""
    with http.stream("GET", path, params={"format": fmt}) as response:
        if response.status_code >= 400:
            response.read()
            raise click.ClickException(f"{detail_of(response)} (HTTP {response.status_code})")
        expected = int(response.headers.get("x-jip-stored-bytes", "0"))
        label = f"{response.headers.get('x-jip-instances', '?')} instances"
        with (
            target.open("wb") as out,
            click.progressbar(length=expected, label=label, file=sys.stderr) as bar,
        ):
            for chunk in response.iter_bytes():
                out.write(chunk)
                bar.update(len(chunk))


def _cohort_id(cohorts: list[dict[str, Any]], ref: str) -> str:
    """The id of the cohort whose id or name is ``ref``; a name must be unambiguous."""
    named = [c for c in cohorts if ref in (c["id"], c["name"])]
    if len(named) == 1:
        return str(named[0]["id"])
    if not named:
        raise click.ClickException(f"no cohort {ref!r} of yours: `jip cohort list` shows them")
    raise click.ClickException(f"{len(named)} cohorts are named {ref!r}: give its id")
