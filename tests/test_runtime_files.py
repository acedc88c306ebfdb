"""The data directory is 0700 and its files 0600: catalog, index and their WAL files hold
PHI and password hashes."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from jip.base.schema import now_utc
from jip.config import Settings
from jip.runtime import Runtime, build_runtime


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """The umask of a careless shell: files 0644, directories 0755."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def write_both(runtime: Runtime) -> None:
    runtime.identity.audit.record("test.write", username="someone", at=now_utc())
    runtime.identity.users.create("alice", "alice's password")
    runtime.index.close()  # opened (and created) the index


def test_a_new_data_dir_is_private_after_start_and_write(
    tmp_path: Path, permissive_umask: None
) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    runtime = build_runtime(settings)
    try:
        write_both(runtime)
        data = settings.data_dir
        assert mode(data) == 0o700
        wal = [data / "catalog.db-wal", data / "catalog.db-shm"]
        assert all(path.exists() for path in wal)  # WAL mode, still open
        for path in [data / "catalog.db", data / "index.db", *wal]:
            assert mode(path) == 0o600, f"{path.name}: {mode(path):o}"
        others = [p.name for p in data.iterdir() if p.is_file() and mode(p) & 0o077]
        assert others == []
    finally:
        runtime.close()


def test_start_tightens_an_existing_data_dir(tmp_path: Path, permissive_umask: None) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    build_runtime(settings).close()
    data = settings.data_dir
    data.chmod(0o755)
    for name in ("catalog.db", "index.db", "jip-up.json"):
        (data / name).touch()
        (data / name).chmod(0o644)
    runtime = build_runtime(settings)
    try:
        write_both(runtime)
        assert mode(data) == 0o700
        for path in data.iterdir():
            if path.is_file():
                assert mode(path) == 0o600, f"{path.name}: {mode(path):o}"
    finally:
        runtime.close()
