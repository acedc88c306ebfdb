"""`jip backup`: a restored site has every catalog row and every blob of the original.

The site is a real embedded one (build_runtime, the ingest path of C-STORE and STOW-RS);
the CLI runs as a subprocess, as a site admin runs it.
"""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import subprocess
import threading
from pathlib import Path

import pytest
from tests.test_embedded import JIP

from jip import backup
from jip.config import Settings
from jip.errors import Conflict, Invalid
from jip.runtime import build_runtime
from jip.samples import synthetic_site, write_datasets


def populated_site(data_dir: Path, scratch: Path, patients: int = 2) -> Settings:
    settings = Settings(data_dir=data_dir)
    runtime = build_runtime(settings)
    try:
        for path in write_datasets(synthetic_site(patients=patients, slices=3), scratch):
            runtime.ingestor.ingest_file(path)
    finally:
        runtime.close()
    results = data_dir / "results" / "run-1"
    results.mkdir(parents=True)
    (results / "radiomics.csv").write_text("segment,volume\nliver,1234\n")
    (data_dir / "keys").mkdir(exist_ok=True)
    (data_dir / "keys" / "signing.pem").write_text("not a real key, but a file to keep\n")
    return settings


def tables(database: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table, in a stable order."""
    conn = sqlite3.connect(database)
    try:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {
            n: sorted(map(tuple, conn.execute(f'SELECT * FROM "{n}"')), key=repr) for n in names
        }
    finally:
        conn.close()


def blob_hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


def test_a_restored_site_has_every_row_and_blob_of_the_original(tmp_path: Path) -> None:
    original = populated_site(tmp_path / "site", tmp_path / "in")
    subprocess.run([*JIP, "--data-dir", str(original.data_dir), "backup", "create",
                    str(tmp_path / "bk")], check=True, capture_output=True)  # fmt: skip
    restored_dir = tmp_path / "restored"
    done = subprocess.run([*JIP, "--data-dir", str(restored_dir), "backup", "restore",
                           str(tmp_path / "bk")], check=True, capture_output=True, text=True)  # fmt: skip
    assert "restored 24 instances" in done.stdout

    assert tables(restored_dir / "catalog.db") == tables(original.data_dir / "catalog.db")
    assert blob_hashes(restored_dir / "blobs") == blob_hashes(original.data_dir / "blobs")
    assert blob_hashes(restored_dir / "results") == blob_hashes(original.data_dir / "results")
    assert (restored_dir / "keys" / "signing.pem").read_text().startswith("not a real key")
    assert ((restored_dir / "catalog.db").stat().st_mode & 0o077) == 0

    # The restored site runs: its catalog opens, and each instance's blob reads back.
    runtime = build_runtime(Settings(data_dir=restored_dir))
    try:
        conn = sqlite3.connect(restored_dir / "catalog.db")
        recorded = dict(conn.execute("SELECT sop_instance_uid, sha256 FROM instances").fetchall())
        conn.close()
        for uid, sha256 in recorded.items():
            instance = runtime.catalog.instance(uid)
            data = runtime.storage.read_bytes(instance.blob_key)
            assert hashlib.sha256(data).hexdigest() == sha256
    finally:
        runtime.close()


def test_a_backup_taken_while_instances_arrive_is_consistent(tmp_path: Path) -> None:
    settings = populated_site(tmp_path / "site", tmp_path / "in", patients=1)
    runtime = build_runtime(settings)
    more = write_datasets(synthetic_site(patients=3, slices=4, seed=7), tmp_path / "more")

    def keep_storing() -> None:
        for path in more:
            runtime.ingestor.ingest_file(path)

    writer = threading.Thread(target=keep_storing)
    writer.start()
    try:
        summary = backup.create(settings, tmp_path / "bk")
    finally:
        writer.join()
        runtime.close()
    assert summary.instances >= 12
    manifest = backup.verify(tmp_path / "bk")  # every blob the snapshot names is there
    assert manifest["counts"]["instances"] == summary.instances  # type: ignore[index]


def test_damage_and_misuse_are_refused_with_what_to_do(tmp_path: Path) -> None:
    settings = populated_site(tmp_path / "site", tmp_path / "in", patients=1)
    with pytest.raises(Conflict, match="not empty"):
        backup.create(settings, tmp_path / "site")
    backup.create(settings, tmp_path / "bk")
    with pytest.raises(Conflict, match="empty data folder"):
        backup.restore(settings, tmp_path / "bk")  # over the live site: refused

    damaged = tmp_path / "damaged"
    shutil.copytree(tmp_path / "bk", damaged)
    victim = next(p for p in (damaged / "blobs").rglob("*") if p.is_file())
    data = victim.read_bytes()
    victim.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))  # one bit flip at the end
    with pytest.raises(Invalid, match="changed since it was made"):
        backup.restore(Settings(data_dir=tmp_path / "new"), damaged)
    assert not (tmp_path / "new" / "catalog.db").exists()  # nothing restored from it

    unfinished = tmp_path / "unfinished"
    shutil.copytree(tmp_path / "bk", unfinished)
    (unfinished / "manifest.json").unlink()
    with pytest.raises(Invalid, match="unfinished"):
        backup.verify(unfinished)

    rotten = tmp_path / "rotten-site"
    shutil.copytree(settings.data_dir, rotten)
    stored = next(p for p in (rotten / "blobs").rglob("*") if p.is_file())
    stored.write_bytes(b"bit rot")
    with pytest.raises(Invalid, match="damaged"):
        backup.create(Settings(data_dir=rotten), tmp_path / "bk2")

    cluster = Settings(data_dir=tmp_path / "c", catalog_url="postgresql://db/jip")
    with pytest.raises(Invalid, match="pg_dump"):
        backup.create(cluster, tmp_path / "bk3")
