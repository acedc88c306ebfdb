"""``PUT /api/flow/runs/{run_id}/files/{name}``: a task's result file, through the API.

Operator pods (and any task without the result store's credentials) deliver their
non-DICOM output here: the body is streamed to a spool file within
``flow.api.max_file_bytes``, moved into the result store under
``runs/<run_id>/<name>`` and recorded as a FILE result of the run in the same call.
Only the run's own token may call it, exactly as for ``POST /runs/{id}/results``, and it
is checked before a byte of the body is read; a refused or failed upload stores nothing.
The same name again replaces the file and its record's size (a retried task).
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from pathlib import Path, PurePosixPath

from fastapi import Request

from jip.errors import Invalid, TooLarge
from jip.flow import access, records
from jip.flow.models import ResultIn, ResultModel
from jip.flow.result_keys import result_key
from jip.flow.schema import ResultKind
from jip.flow.service import FlowService
from jip.store import BlobStorage

MAX_NAME = 256  # a result's name (ResultIn.name)


def check_file_name(name: str) -> str:
    """``<series folder>/<file>``-like relative names only: no absolute path, no ``..``,
    no hidden or empty parts; Invalid (400) says what a good name looks like."""
    parts = name.split("/")
    bad = (
        not name
        or len(name) > MAX_NAME
        or "\\" in name
        or "\x00" in name
        or PurePosixPath(name).is_absolute()
        or any(not part or part.startswith(".") for part in parts)
    )
    if bad:
        raise Invalid(
            f"result file name {name[:80]!r} is not allowed: give a relative path such as "
            f"'<series UID>/radiomics.csv' (at most {MAX_NAME} characters, no leading '/', "
            "no '..', no empty or hidden parts)"
        )
    return name


def file_key(run_id: str, name: str) -> str:
    """Where the run's file ``name`` lives in the result store."""
    return result_key(run_id, check_file_name(name))


def check_length(request: Request, max_bytes: int) -> None:
    """413 before reading a body whose declared length is over the limit."""
    length = request.headers.get("content-length", "")
    if length.isdecimal() and int(length) > max_bytes:
        raise TooLarge(_too_large(int(length), max_bytes))


async def spool_body(chunks: AsyncIterator[bytes], spool_dir: Path, max_bytes: int) -> Path:
    """Write the body to a new file in ``spool_dir``; TooLarge (and no file) past the limit."""
    spool_dir.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(dir=spool_dir, prefix="result-", delete=False)  # noqa: SIM115
    path = Path(handle.name)
    size = 0
    try:
        with handle:
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise TooLarge(_too_large(size, max_bytes))
                handle.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def file_record(
    run_id: str, name: str, *, series: str, operator: str, size: int
) -> dict[str, object]:
    """The FILE result an upload records (``ResultIn``'s fields)."""
    return {
        "series_instance_uid": series,
        "operator": operator,
        "kind": ResultKind.FILE,
        "key": file_key(run_id, name),
        "name": name,
        "size_bytes": size,
    }


def check_upload(service: FlowService, run_id: str, name: str, series: str) -> str:
    """Before the body is read: the run's own token, a good name, one of the run's
    series; the file's key in the result store."""
    access.require_run_token(service.caller, run_id)
    key = file_key(run_id, name)
    service.check_sources(run_id, [series])
    return key


def store_file(
    service: FlowService,
    storage: BlobStorage,
    run_id: str,
    name: str,
    spool: Path,
    *,
    series: str,
    operator: str,
) -> ResultModel:
    """Move the spooled body into the result store and record it (it replaces a file of
    the same name; its record keeps its id and gets the new size)."""
    size = spool.stat().st_size
    storage.move_in(check_upload(service, run_id, name, series), spool)
    result = ResultIn.model_validate(
        file_record(run_id, name, series=series, operator=operator, size=size)
    )
    (stored,) = service.add_results(run_id, [result])
    if stored.size_bytes != size:
        records.set_result_size(service.db, stored.id, size)
        stored = stored.model_copy(update={"size_bytes": size})
    return stored


def _too_large(size: int, max_bytes: int) -> str:
    return (
        f"result file of {size} bytes or more is over flow.api.max_file_bytes ({max_bytes}):"
        " write smaller files, or ask the site admin to raise the limit"
    )
