"""`jip backup create|restore`: a consistent copy of an embedded site, and the way back.

The embedded shape keeps everything under the data directory: the catalog and the index
in SQLite, instances and run results as files, the site's keys. A backup is a folder:

- ``catalog.db``, ``index.db``: SQLite's online backup (consistent while `jip up`
  keeps writing; a reader never blocks the site for long);
- ``blobs/<key>``: every blob the catalog snapshot names, copied and checked against
  the SHA-256 the catalog recorded when it was received (a damaged blob fails the
  backup rather than being copied silently);
- ``results/…`` and ``files/keys``, ``files/federation``: run results and the site's
  identities (signing keys, federation keys), copied as they are;
- ``manifest.json``, written last: what was copied, each file with its SHA-256. A folder
  without it is an unfinished backup, and restore refuses it.

Blobs are content-addressed and never change, so copying them after the snapshot is
safe; blobs that arrive meanwhile belong to the next backup. Restore goes into an empty
data directory only, verifies every file against the manifest before the site may use
it, and checks that the restored catalog names exactly the blobs restored.

The cluster shape (PostgreSQL, S3, OpenSearch) is backed up with those systems' own
tools: docs/site-admin.md, "Backup and restore".
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

from jip.config import Settings
from jip.errors import Conflict, Invalid, NotFound

FORMAT = "jip-backup/1"
MANIFEST = "manifest.json"
DATABASES = ("catalog.db", "index.db")
SITE_FILES = ("keys", "federation")  # under the data dir: the site's identities
_CHUNK = 1 << 20

Progress = Callable[[str, int, int], None]  # (step, done, total)


@dataclass(frozen=True)
class BackupSummary:
    """What a backup holds (also the manifest's ``counts``)."""

    instances: int
    blobs: int
    blob_bytes: int
    files: int


def _silent(_step: str, _done: int, _total: int) -> None:
    pass


def _local_path(url: str, what: str) -> Path:
    parts = urlsplit(url)
    if parts.scheme == "file":
        return Path(url2pathname(parts.path))
    if parts.scheme == "sqlite" and url.startswith("sqlite:///"):
        return Path(url.removeprefix("sqlite:///"))
    raise Invalid(
        f"{what} is {parts.scheme}://, not the embedded shape's local files: back it up with "
        "its own tools (pg_dump, bucket replication; docs/site-admin.md, 'Backup and restore')"
    )


@dataclass(frozen=True)
class _Layout:
    """Where an embedded site keeps what a backup holds."""

    catalog: Path
    index: Path
    blobs: Path
    results: Path
    data_dir: Path

    @classmethod
    def of(cls, settings: Settings) -> _Layout:
        return cls(
            catalog=_local_path(settings.resolved_catalog_url, "the catalog"),
            index=_local_path(settings.resolved_index_url, "the index"),
            blobs=_local_path(settings.resolved_storage_url, "the blob store"),
            results=_local_path(settings.resolved_results_url, "the result store"),
            data_dir=settings.data_dir,
        )

    def database(self, name: str) -> Path:
        return self.catalog if name == "catalog.db" else self.index


def _sha256_copy(source: Path, target: Path) -> tuple[str, int]:
    """Copy ``source`` to ``target`` (0600) and return the copy's SHA-256 and size."""
    digest, size = hashlib.sha256(), 0
    target.parent.mkdir(parents=True, exist_ok=True)
    with source.open("rb") as src, target.open("xb") as dst:
        target.chmod(0o600)
        while chunk := src.read(_CHUNK):
            digest.update(chunk)
            dst.write(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _online_copy(source: Path, target: Path) -> None:
    """SQLite's online backup: a consistent copy while writers go on."""
    target.touch(mode=0o600, exist_ok=False)  # private before SQLite writes a page
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst, pages=4096)
    finally:
        dst.close()
        src.close()


def _catalog_blobs(catalog: Path) -> list[tuple[str, str, int]]:
    """(blob key, SHA-256, size) of every instance in a catalog file."""
    conn = sqlite3.connect(f"file:{catalog}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT blob_key, sha256, size_bytes FROM instances ORDER BY 1")
        return [(str(k), str(s), int(n)) for k, s, n in rows]
    finally:
        conn.close()


def _files_under(root: Path) -> Iterator[Path]:
    if root.is_dir():
        yield from sorted(p for p in root.rglob("*") if p.is_file())


def create(settings: Settings, target: Path, progress: Progress = _silent) -> BackupSummary:
    """Back the site of ``settings`` up into the new folder ``target``."""
    layout = _Layout.of(settings)
    if not layout.catalog.is_file():
        raise NotFound(f"no catalog at {layout.catalog}: is --data-dir the site's data folder?")
    if target.exists() and any(target.iterdir()):
        raise Conflict(f"{target} is not empty: back up into a new folder")
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    databases = [name for name in DATABASES if layout.database(name).is_file()]
    for done, name in enumerate(databases):
        progress("databases", done, len(databases))
        _online_copy(layout.database(name), target / name)
    instances = _catalog_blobs(target / "catalog.db")
    blobs = sorted({(key, sha, size) for key, sha, size in instances})
    entries: list[dict[str, object]] = []
    for done, (key, sha256, _size) in enumerate(blobs):
        progress("blobs", done, len(blobs))
        source = layout.blobs / key
        if not source.is_file():
            raise NotFound(
                f"blob {key} is in the catalog but not in {layout.blobs} (deleted while the "
                "backup ran, or lost): run the backup again; if it fails again, check the store"
            )
        copied, size = _sha256_copy(source, target / "blobs" / key)
        if copied != sha256:
            raise Invalid(
                f"blob {key} does not match the SHA-256 recorded when it was received: the "
                "stored file is damaged; restore it from an earlier backup"
            )
        entries.append({"path": f"blobs/{key}", "sha256": copied, "size": size})
    others = [("results", p, layout.results) for p in _files_under(layout.results)]
    for name in SITE_FILES:
        root = layout.data_dir / name
        others += [(f"files/{name}", p, root) for p in _files_under(root)]
    for done, (prefix, path, root) in enumerate(others):
        progress("files", done, len(others))
        relative = f"{prefix}/{path.relative_to(root).as_posix()}"
        copied, size = _sha256_copy(path, target / relative)
        entries.append({"path": relative, "sha256": copied, "size": size})
    summary = BackupSummary(
        instances=len(instances),
        blobs=len(blobs),
        blob_bytes=sum(size for _k, _s, size in blobs),
        files=len(others),
    )
    manifest = {
        "format": FORMAT,
        "created_at": datetime.now(UTC).isoformat(),
        "databases": {name: _sha256_of(target / name) for name in databases},
        "counts": summary.__dict__,
        "files": entries,
    }
    (target / MANIFEST).write_text(json.dumps(manifest, indent=1))
    progress("done", 1, 1)
    return summary


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(source: Path) -> dict[str, object]:
    path = source / MANIFEST
    if not path.is_file():
        raise Invalid(f"{source} has no {MANIFEST}: not a JIP backup, or an unfinished one")
    manifest: dict[str, object] = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise Invalid(f"{source} is a {manifest.get('format')!r} backup; this JIP reads {FORMAT}")
    return manifest


def verify(source: Path, progress: Progress = _silent) -> dict[str, object]:
    """Check every file of the backup against its manifest; the manifest."""
    manifest = read_manifest(source)
    databases: dict[str, str] = manifest["databases"]  # type: ignore[assignment]
    files: list[dict[str, str]] = manifest["files"]  # type: ignore[assignment]
    checks = [(name, sha) for name, sha in databases.items()]
    checks += [(entry["path"], entry["sha256"]) for entry in files]
    for done, (relative, sha256) in enumerate(checks):
        progress("verify", done, len(checks))
        path = source / relative
        if not path.is_file() or _sha256_of(path) != sha256:
            raise Invalid(
                f"{relative} is missing from the backup or changed since it was made: "
                "this backup cannot be restored as it is; use another one"
            )
    listed = {entry["path"].removeprefix("blobs/") for entry in files}
    named = {key for key, _sha, _size in _catalog_blobs(source / "catalog.db")}
    if named - listed:
        raise Invalid(f"the backup's catalog names {len(named - listed)} blobs it does not hold")
    return manifest


def restore(settings: Settings, source: Path, progress: Progress = _silent) -> BackupSummary:
    """Restore the backup in ``source`` into the (empty) site of ``settings``."""
    layout = _Layout.of(settings)
    manifest = verify(source, progress)
    occupied = [p for p in (layout.catalog, layout.blobs, layout.results) if p.exists()]
    if occupied:
        raise Conflict(
            f"{occupied[0]} exists: restore into an empty data folder (--data-dir NEW), "
            "then point the site at it"
        )
    layout.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    databases: dict[str, str] = manifest["databases"]  # type: ignore[assignment]
    for name in databases:
        layout.database(name).parent.mkdir(parents=True, exist_ok=True)
        _sha256_copy(source / name, layout.database(name))
    files: list[dict[str, str]] = manifest["files"]  # type: ignore[assignment]
    for done, entry in enumerate(files):
        progress("restore", done, len(files))
        relative = entry["path"]
        top, _, rest = relative.partition("/")
        if top == "blobs":
            target = layout.blobs / rest
        elif top == "results":
            target = layout.results / rest
        else:  # files/<name>/...
            target = layout.data_dir / rest
        _sha256_copy(source / relative, target)
    shutil.rmtree(layout.data_dir / "spool", ignore_errors=True)
    counts: dict[str, int] = manifest["counts"]  # type: ignore[assignment]
    progress("done", 1, 1)
    return BackupSummary(**counts)
