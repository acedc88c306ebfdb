"""The hub's data dir: its database, its CA and its server certificate.

``init_hub`` makes them once (and refuses a dir that already holds a hub, so a second
`jip hub init` never replaces the CA every site pins); ``open_hub`` loads them for the
app and the admin commands.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from jip.db import make_engine, make_sessionmaker
from jip.errors import Conflict, NotFound
from jip.federation.hub.pki import Authority, cert_pem, make_authority
from jip.federation.hub.tables import HubBase
from jip.federation.private_files import write_private

Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class HubPaths:
    """Where a hub keeps its files (keys 0600, the dir 0700)."""

    data_dir: Path

    @property
    def database(self) -> Path:
        return self.data_dir / "hub.db"

    @property
    def ca_cert(self) -> Path:
        return self.data_dir / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.data_dir / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.data_dir / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.data_dir / "server.key"

    @property
    def database_url(self) -> str:
        return f"sqlite:///{self.database}"


@dataclass
class Hub:
    """An opened hub: its paths, database and CA, and the clock deadlines are read by
    (tests move it forward instead of sleeping)."""

    paths: HubPaths
    engine: Engine
    sessions: sessionmaker[Session]
    authority: Authority
    clock: Clock = field(default=utc_now)

    def close(self) -> None:
        self.engine.dispose()


def init_hub(data_dir: Path, hosts: list[str] | None = None) -> HubPaths:
    """Create a hub in ``data_dir``: the database, the CA and the server certificate for
    localhost, 127.0.0.1 and ``hosts``. Conflict when the dir already holds a hub."""
    paths = HubPaths(Path(data_dir).resolve())
    existing = [p for p in (paths.database, paths.ca_cert, paths.ca_key) if p.exists()]
    if existing:
        raise Conflict(
            f"{paths.data_dir} already holds a hub ({existing[0].name}); sites pin its CA, "
            "so it is never replaced: use another --data-dir for a new network"
        )
    paths.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(paths.data_dir, 0o700)
    authority, ca_key, server_cert, server_key = make_authority(list(hosts or []))
    write_private(paths.ca_key, ca_key)
    write_private(paths.server_key, server_key)
    paths.server_cert.write_text(cert_pem(server_cert) + authority.pem)  # with its chain
    engine = make_engine(paths.database_url)
    try:
        HubBase.metadata.create_all(engine)
    finally:
        engine.dispose()
    paths.ca_cert.write_text(authority.pem)  # last: its presence says init finished
    return paths


def open_hub(data_dir: Path, clock: Clock = utc_now) -> Hub:
    """The hub of ``data_dir``; NotFound naming `jip hub init` when there is none."""
    paths = HubPaths(Path(data_dir).resolve())
    if not paths.ca_cert.exists() or not paths.database.exists():
        raise NotFound(f"no hub in {paths.data_dir}: run `jip hub init --data-dir {data_dir}`")
    engine = make_engine(paths.database_url)
    HubBase.metadata.create_all(engine)  # tables added by a later version of the hub
    authority = Authority.load(paths.ca_cert, paths.ca_key)
    return Hub(paths, engine, make_sessionmaker(engine), authority, clock)
