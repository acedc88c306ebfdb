"""DICOM peers: the remote AEs that SCU calls target and C-MOVE destinations name.

``store.peers`` in the settings are read-only seeds; site admins add and change peers
at runtime (as Orthanc's ``PUT /modalities/{id}``), kept in the ``dicom_peers`` table,
where a stored peer overrides the seed of the same name. Every lookup reads the table,
so listener worker processes see a change at their next C-MOVE without a restart.

A peer's ``projects`` also scope what it sees when it calls us (:func:`query_scope`):
DIMSE has no login, so the calling AE title is the caller, as in Orthanc's and dcm4chee's
per-AE access rules.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, DateTime, Engine, Integer, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from jip import errors
from jip.base import now_utc
from jip.config import DicomPeer, UnknownAeQueries
from jip.db import Base
from jip.store.catalog.catalog import Catalog
from jip.store.catalog.projects import Scope

log = logging.getLogger(__name__)
Seeds = Mapping[str, DicomPeer]
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class PeerSource(StrEnum):
    SETTINGS = "settings"  # store.peers: read-only here
    DATABASE = "database"  # added or changed at runtime


class StoredPeer(Base):
    __tablename__ = "dicom_peers"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    ae_title: Mapped[str] = mapped_column(String(16), index=True)
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer)
    projects: Mapped[list[str]] = mapped_column(JSON, default=list)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_by: Mapped[str] = mapped_column(String(64))

    def peer(self) -> DicomPeer:
        return DicomPeer(
            ae_title=self.ae_title, host=self.host, port=self.port, projects=self.projects or []
        )


@dataclass(frozen=True)
class NamedPeer:
    name: str
    peer: DicomPeer
    source: PeerSource
    overrides_settings: bool = False  # a stored peer that hides a seed of its name


def check_name(name: str) -> str:
    """A peer name is a URL path segment and a CLI argument: keep it plain."""
    if not _NAME.match(name):
        raise errors.Invalid(
            f"peer name {name!r}: 1-64 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit"
        )
    return name


def list_peers(engine: Engine, seeds: Seeds) -> list[NamedPeer]:
    """Every peer by name: stored peers first where they override a seed."""
    stored = _stored(engine)
    merged = {
        name: NamedPeer(name, peer, PeerSource.SETTINGS)
        for name, peer in seeds.items()
        if name not in stored
    }
    for name, peer in stored.items():
        merged[name] = NamedPeer(name, peer, PeerSource.DATABASE, overrides_settings=name in seeds)
    return [merged[name] for name in sorted(merged)]


def get_peer(engine: Engine, seeds: Seeds, name: str) -> DicomPeer:
    """The peer ``name``, else :class:`NotFound` listing the known names."""
    peers = {item.name: item.peer for item in list_peers(engine, seeds)}
    if name not in peers:
        known = ", ".join(peers) or "none configured (store.peers, /api/dicom/peers)"
        raise errors.NotFound(f"unknown DICOM peer {name!r}; known peers: {known}")
    return peers[name]


def peer_for_ae_title(engine: Engine, seeds: Seeds, ae_title: str) -> DicomPeer | None:
    """The peer a C-MOVE destination names (PS3.4 C.4.2.1.4.1), or None if none does."""
    return next(iter(peers_with_ae_title(engine, seeds, ae_title)), None)


def peers_with_ae_title(engine: Engine, seeds: Seeds, ae_title: str) -> list[DicomPeer]:
    """Every peer declared with ``ae_title`` (the caller behind a calling AE title)."""
    wanted = ae_title.strip()
    return [item.peer for item in list_peers(engine, seeds) if item.peer.ae_title == wanted]


def query_scope(
    engine: Engine, seeds: Seeds, calling_ae_title: str, *, unknown: UnknownAeQueries
) -> Scope:
    """The projects whose series C-FIND, C-MOVE and C-GET from ``calling_ae_title`` see.

    None means every series: a peer without projects, or an AE that is no peer while
    ``unknown`` (``store.unknown_ae_queries``) is "all"; an AE that is no peer sees
    nothing by default ("none"). Several peers with the AE title see what any of them
    may. Read at each request, as :func:`peer_for_ae_title`.
    """
    bound = peers_with_ae_title(engine, seeds, calling_ae_title)
    if not bound and unknown == "none":
        extra = {"calling_ae": calling_ae_title.strip()}
        log.info("query from an AE that is no peer: no matches", extra=extra)
        return frozenset()
    if not bound:
        return None
    if any(not peer.projects for peer in bound):
        return None
    return frozenset(name for peer in bound for name in peer.projects)


def callers_catalog(
    catalog: Catalog, seeds: Seeds, calling_ae_title: str, *, unknown: UnknownAeQueries
) -> Catalog:
    """``catalog`` as seen by C-FIND/C-MOVE/C-GET from ``calling_ae_title``."""
    scope = query_scope(catalog.engine, seeds, calling_ae_title, unknown=unknown)
    return catalog.scoped(scope)


def put_peer(engine: Engine, name: str, peer: DicomPeer, *, user: str) -> NamedPeer:
    """Add or replace the stored peer ``name`` (it overrides a seed of that name)."""
    check_name(name)
    with Session(engine) as session, session.begin():
        row = session.get(StoredPeer, name)
        if row is None:
            row = StoredPeer(name=name)
            session.add(row)
        row.ae_title, row.host, row.port = peer.ae_title, peer.host, peer.port
        row.projects = list(peer.projects)
        row.updated_at, row.updated_by = now_utc(), user[:64]
    return NamedPeer(name, peer, PeerSource.DATABASE)


def delete_peer(engine: Engine, seeds: Seeds, name: str) -> None:
    """Remove the stored peer ``name``; a seed it overrode applies again.

    A seed alone cannot be removed here: the settings file would bring it back at the
    next start, so the caller is told to change the configuration instead.
    """
    with Session(engine) as session, session.begin():
        row = session.get(StoredPeer, name)
        if row is not None:
            session.delete(row)
            return
    if name in seeds:
        raise errors.Conflict(
            f"DICOM peer {name!r} is configured in store.peers and read-only here: "
            "change the site's configuration"
        )
    raise errors.NotFound(f"unknown DICOM peer {name!r}")


def _stored(engine: Engine) -> dict[str, DicomPeer]:
    with Session(engine) as session:
        return {row.name: row.peer() for row in session.scalars(select(StoredPeer))}
