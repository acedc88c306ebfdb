"""`jip dicom echo|send|find|move`: talk DIMSE to a PACS, a modality or this site.

The remote AE is a peer by name (``--peer pacs``: from ``store.peers`` or added over
``PUT /api/dicom/peers/{name}``) or given by ``--host/--port/--aet``. Keys are
``Keyword=match`` pairs as PS3.4 C.2.2.2 defines them (``PatientName=DOE*``,
``StudyDate=20240101-20240131``); a bare ``Keyword`` asks for it to be returned.

    jip dicom echo --peer pacs
    jip dicom send --peer pacs ./export/
    jip dicom find --peer pacs --level series StudyInstanceUID=1.2.3 Modality
    jip dicom move --peer pacs --dest JIP StudyInstanceUID=1.2.3

`jip dicom upload` is the other way in: files, folders and zips over HTTP into a project
of a site (`POST /api/store/upload`), as the browser's Upload page sends them:

    jip dicom upload ./cd-export/ scans.zip --project liver
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import click
import httpx
from click._termui_impl import ProgressBar
from pydicom.dataset import Dataset

from jip.cli import dicom_upload
from jip.cli.site import echo_json, settings_from, site_client, url_option
from jip.config import DicomPeer, Settings
from jip.errors import JipError
from jip.store.catalog.queries import QueryLevel
from jip.store.dimse import scu

# Returned when the command names no return keys, per level (PS3.4 C.6.2.1).
DEFAULT_KEYS: dict[QueryLevel, list[str]] = {
    QueryLevel.PATIENT: ["PatientID", "PatientName", "PatientBirthDate", "PatientSex"],
    QueryLevel.STUDY: [
        "PatientID",
        "PatientName",
        "StudyDate",
        "StudyDescription",
        "AccessionNumber",
        "ModalitiesInStudy",
        "NumberOfStudyRelatedInstances",
        "StudyInstanceUID",
    ],
    QueryLevel.SERIES: [
        "StudyInstanceUID",
        "SeriesNumber",
        "Modality",
        "SeriesDescription",
        "NumberOfSeriesRelatedInstances",
        "SeriesInstanceUID",
    ],
    QueryLevel.IMAGE: ["SeriesInstanceUID", "InstanceNumber", "SOPClassUID", "SOPInstanceUID"],
}
# The level a C-MOVE works at, from the most specific unique key given (PS3.4 C.6.2.1).
_UNIQUE_KEYS = [
    ("SOPInstanceUID", QueryLevel.IMAGE),
    ("SeriesInstanceUID", QueryLevel.SERIES),
    ("StudyInstanceUID", QueryLevel.STUDY),
    ("PatientID", QueryLevel.PATIENT),
]


def _remote_options(command: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--peer", help="A peer by name (store.peers or added in the admin UI)."),
        click.option("--host", help="Remote host (instead of --peer)."),
        click.option("--port", type=int, help="Remote DICOM port (instead of --peer)."),
        click.option("--aet", help="Remote (called) AE title (instead of --peer)."),
        click.option("--calling-aet", help="Our AE title (default: store.ae_title)."),
        click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _target(
    ctx: click.Context, peer: str | None, host: str | None, port: int | None, aet: str | None,
    calling_aet: str | None,
) -> tuple[Settings, DicomPeer]:  # fmt: skip
    settings = settings_from(ctx, store__ae_title=calling_aet)
    try:
        if peer:
            return settings, _named_peer(settings, peer)
    except JipError as exc:
        raise click.ClickException(str(exc)) from exc
    if not (host and port and aet):
        raise click.UsageError("name a --peer, or give --host, --port and --aet")
    return settings, DicomPeer(ae_title=aet, host=host, port=port)


def _named_peer(settings: Settings, name: str) -> DicomPeer:
    """A peer by name, from store.peers and those added over the API (site catalog)."""
    from jip.backends import catalog_engine_for
    from jip.migrations import upgrade
    from jip.store.dimse import peers

    url = settings.resolved_catalog_url
    upgrade(url)
    engine = catalog_engine_for(url)
    try:
        return peers.get_peer(engine, settings.store.peers, name)
    finally:
        engine.dispose()


def _parse_keys(pairs: tuple[str, ...]) -> dict[str, str]:
    keys: dict[str, str] = {}
    for pair in pairs:
        keyword, _, value = pair.partition("=")
        if not keyword:
            raise click.BadParameter(f"{pair!r} is not Keyword=value", param_hint="KEYS")
        keys[keyword.strip()] = value.strip()
    return keys


def _fail(exc: JipError) -> click.ClickException:
    return click.ClickException(str(exc))


@click.group()
def dicom() -> None:
    """DIMSE towards a PACS or modality (echo, send, find, move); upload into a site."""


@dicom.command()
@_remote_options
@click.pass_context
def echo(ctx: click.Context, as_json: bool, **remote: Any) -> None:
    """Check that the remote AE answers (C-ECHO)."""
    settings, peer = _target(ctx, **remote)
    try:
        result = scu.echo(settings, peer)
    except JipError as exc:
        raise _fail(exc) from exc
    if as_json:
        click.echo(json.dumps({"status": result.status, "seconds": round(result.seconds, 4)}))
    else:
        state = "success" if result.status == 0 else f"status 0x{result.status:04X}"
        click.echo(
            f"C-ECHO {peer.ae_title}@{peer.host}:{peer.port}: {state} in {result.seconds * 1000:.0f} ms"
        )
    if result.status != 0:
        ctx.exit(1)


@dicom.command()
@_remote_options
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.pass_context
def send(ctx: click.Context, paths: tuple[Path, ...], as_json: bool, **remote: Any) -> None:
    """Send DICOM files and folders (recursively) to the remote AE (C-STORE)."""
    settings, peer = _target(ctx, **remote)
    total = sum(1 for _ in scu.dicom_files(paths))
    with _progress(total, f"sending to {peer.ae_title}") as bar:
        try:
            report = scu.send(settings, peer, paths, progress=lambda _: bar.update(1))
        except JipError as exc:
            raise _fail(exc) from exc
    failed = report.failed
    if as_json:
        click.echo(json.dumps({
            "sent": report.sent,
            "failed": [
                {"path": str(f.path), "status": f.status, "error": f.error} for f in failed
            ],
        }, indent=2))  # fmt: skip
    else:
        click.echo(f"sent {report.sent} of {len(report.files)} files to {peer.ae_title}")
        for item in failed[:20]:
            status = f"0x{item.status:04X}" if item.status is not None else "not sent"
            click.echo(f"  {item.path}: {status} {item.error}", err=True)
    if failed:
        ctx.exit(1)


@dicom.command()
@_remote_options
@click.option(
    "--level",
    type=click.Choice([lvl.value for lvl in QueryLevel], case_sensitive=False),
    default="STUDY",
    show_default=True,
)
@click.option(
    "--model", type=click.Choice(["study", "patient"]), default="study", show_default=True
)
@click.argument("keys", nargs=-1)
@click.pass_context
def find(
    ctx: click.Context, level: str, model: str, keys: tuple[str, ...], as_json: bool, **remote: Any
) -> None:
    """Query the remote AE (C-FIND); KEYS are Keyword=match or bare Keyword."""
    settings, peer = _target(ctx, **remote)
    query_level = QueryLevel(level.upper())
    wanted = _parse_keys(keys)
    for keyword in DEFAULT_KEYS[query_level] if not any(not v for v in wanted.values()) else []:
        wanted.setdefault(keyword, "")
    try:
        matches = scu.find(settings, peer, query_level, wanted, model=cast(scu.Model, model))
    except JipError as exc:
        raise _fail(exc) from exc
    rows = [_flat(match, list(wanted)) for match in matches]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    _print_table(rows, list(wanted))
    click.echo(f"{len(rows)} match(es)", err=True)


@dicom.command()
@_remote_options
@click.option("--dest", help="Destination AE title (default: this site, store.ae_title).")
@click.option(
    "--level",
    type=click.Choice([lvl.value for lvl in QueryLevel], case_sensitive=False),
    help="Default: from the most specific UID given.",
)
@click.option(
    "--model", type=click.Choice(["study", "patient"]), default="study", show_default=True
)
@click.argument("keys", nargs=-1, required=True)
@click.pass_context
def move(
    ctx: click.Context,
    dest: str | None,
    level: str | None,
    model: str,
    keys: tuple[str, ...],
    as_json: bool,
    **remote: Any,
) -> None:
    """Make the remote AE send the matches to --dest (C-MOVE)."""
    settings, peer = _target(ctx, **remote)
    wanted = _parse_keys(keys)
    query_level = QueryLevel(level.upper()) if level else _level_of(wanted)
    destination = dest or settings.store.ae_title
    with _progress(0, f"{peer.ae_title} -> {destination}") as bar:

        def progress(step: scu.MoveProgress) -> None:
            done = step.completed + step.failed + step.warning
            bar.length = done + step.remaining
            bar.update(done - bar.pos)

        try:
            result = scu.move(
                settings,
                peer,
                destination,
                query_level,
                wanted,
                model=cast(scu.Model, model),
                progress=progress,
            )
        except JipError as exc:
            raise _fail(exc) from exc
    summary = {
        "status": result.status,
        "completed": result.completed,
        "failed": result.failed,
        "warning": result.warning,
        "failed_sop_instance_uids": result.failed_sop_instance_uids,
        "error_comment": result.error_comment,
    }
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(
            f"C-MOVE {peer.ae_title} -> {destination}: {result.completed} completed, "
            f"{result.failed} failed, {result.warning} warning (status 0x{result.status:04X})"
        )
    if result.failed:
        ctx.exit(1)


@dicom.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--project", help="The project new series go to (default: your only one).")
@url_option
@click.option("--json", "as_json", is_flag=True, help="Print every file's result as JSON.")
@click.pass_context
def upload(
    ctx: click.Context, paths: tuple[Path, ...], project: str | None, url: str | None, as_json: bool
) -> None:
    """Upload DICOM files, folders (recursively) and zips into a site over HTTP.

    Every file (every zip member) is stored, a duplicate, skipped (DICOMDIR) or refused
    with the reason; the exit status is 1 when any file was refused.
    """
    files = dicom_upload.collect(paths)
    if not files:
        raise click.UsageError("no files under the paths given")
    params = {"project": project} if project else {}
    results: list[dict[str, Any]] = []
    with site_client(ctx, url) as client, _progress(sum(f.size for f in files), "uploading") as bar:
        for batch in dicom_upload.batches(files):
            body = dicom_upload.FormBody(batch)
            headers = {"Content-Type": body.content_type, "Content-Length": str(body.length())}
            answer = client.call(
                "POST", "/api/store/upload", params=params, headers=headers,
                content=body.chunks(bar.update), timeout=httpx.Timeout(300, read=3600),
            )  # fmt: skip
            results.extend(answer["results"])
    counts = {s: sum(r["status"] == s for r in results) for s in _STATUSES}
    if as_json:
        echo_json({"files": len(results), **counts, "results": results})
    else:
        click.echo(", ".join(f"{n} {s}" for s, n in counts.items()) + f" of {len(results)} files")
        for result in [r for r in results if r["status"] == "refused"][:50]:
            click.echo(f"  refused {result['name']}: {result['reason']}", err=True)
    if counts["refused"]:
        ctx.exit(1)


_STATUSES = ("stored", "duplicate", "skipped", "refused")


def _progress(length: int, label: str) -> ProgressBar[int]:
    """A progress bar on stderr, so that --json output on stdout stays clean."""
    return click.progressbar(length=length, label=label, file=sys.stderr)


def _level_of(keys: dict[str, str]) -> QueryLevel:
    for keyword, level in _UNIQUE_KEYS:
        if keys.get(keyword):
            return level
    raise click.UsageError("give --level or a unique key (StudyInstanceUID=..., ...)")


def _flat(ds: Dataset, keywords: list[str]) -> dict[str, str]:
    """Keyword -> text, multi-values joined with backslash as in DICOM."""
    row: dict[str, str] = {}
    for keyword in keywords:
        value = ds.get(keyword)
        if value is None:
            row[keyword] = ""
        elif isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
            row[keyword] = "\\".join(str(v) for v in value)
        else:
            row[keyword] = str(value)
    return row


def _print_table(rows: list[dict[str, str]], columns: list[str]) -> None:
    widths = {c: min(40, max([len(c)] + [len(r[c]) for r in rows])) for c in columns}
    click.echo("  ".join(c[: widths[c]].ljust(widths[c]) for c in columns))
    for row in rows:
        click.echo("  ".join(row[c][: widths[c]].ljust(widths[c]) for c in columns))
