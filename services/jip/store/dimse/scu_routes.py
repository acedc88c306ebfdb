"""``/api/dicom``: the DICOM peers, and C-ECHO, C-FIND and C-MOVE towards them.

Site admins only: a query reaches the whole hospital PACS, outside any project. Peers
come from ``store.peers`` (read-only) and from ``PUT /api/dicom/peers/{name}``
(:mod:`jip.store.dimse.peers`); the SCU calls take a peer's name, never a host and port, so
they cannot be used to scan the network. Calls block on the network, so the routes are
sync functions (FastAPI runs them in its thread pool).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, Field

from jip import errors
from jip.base import AdminDep, AuditDep, ClientIpDep, ProjectsDep, require_admin
from jip.config import DicomPeer
from jip.store.adapters import StoreAdapters
from jip.store.catalog.queries import QueryLevel
from jip.store.deps import AdaptersDep
from jip.store.dimse import peers, scu

router = APIRouter(prefix="/api/dicom", tags=["dicom"], dependencies=[Depends(require_admin)])


class PeerOut(BaseModel):
    name: str
    ae_title: str
    host: str
    port: int
    projects: list[str] = Field(default_factory=list)  # what it sees calling us; []: all
    retrieve: Literal["move", "get"] = "move"  # C-MOVE to us, or C-GET (no route to us)
    source: peers.PeerSource
    overrides_settings: bool = False

    @classmethod
    def of(cls, item: peers.NamedPeer) -> PeerOut:
        return cls(
            name=item.name,
            source=item.source,
            overrides_settings=item.overrides_settings,
            **item.peer.model_dump(),
        )


class EchoOut(BaseModel):
    status: int
    seconds: float


class FindIn(BaseModel):
    level: QueryLevel = QueryLevel.STUDY
    model: Literal["study", "patient"] = "study"
    # DICOM keyword -> PS3.4 C.2.2.2 match string; "" asks for the key to be returned.
    keys: dict[str, str] = Field(default_factory=dict)


class MoveIn(BaseModel):
    # Default: this site (store.ae_title), i.e. retrieve from the peer into JIP.
    destination: str | None = Field(default=None, max_length=16)
    level: QueryLevel = QueryLevel.STUDY
    model: Literal["study", "patient"] = "study"
    keys: dict[str, str]


class MoveOut(BaseModel):
    status: int
    completed: int
    failed: int
    warning: int
    failed_sop_instance_uids: list[str]
    error_comment: str


@router.get("/peers")
def list_peers(adapters: AdaptersDep) -> list[PeerOut]:
    """The remote AEs: configured ones and those added here."""
    return [PeerOut.of(item) for item in peers.list_peers(adapters.engine, _seeds(adapters))]


@router.put("/peers/{name}")
def put_peer(
    name: str,
    body: DicomPeer,
    adapters: AdaptersDep,
    admin: AdminDep,
    audit: AuditDep,
    ip: ClientIpDep,
    projects: ProjectsDep,
) -> PeerOut:
    """Add or change a peer (a configured one of the same name is overridden)."""
    if body.retrieve != "move":
        # The dicom_peers table has no column for it yet: refuse rather than drop it.
        raise errors.Invalid(
            f"retrieve {body.retrieve!r}: set it for this peer in store.peers (the site's "
            "configuration); peers added here are retrieved from with C-MOVE"
        )
    for project in body.projects:
        projects.get(project)  # 404 for an unknown project
    item = peers.put_peer(adapters.engine, name, body, user=admin.username)
    detail = body.model_dump()
    audit.record(
        "dicom.peer.set", username=admin.username, target=name, detail=detail, client_ip=ip
    )
    return PeerOut.of(item)


@router.delete("/peers/{name}", status_code=204)
def delete_peer(
    name: str, adapters: AdaptersDep, admin: AdminDep, audit: AuditDep, ip: ClientIpDep
) -> Response:
    """Remove a peer added here; a configured peer it overrode applies again."""
    peers.delete_peer(adapters.engine, _seeds(adapters), name)
    audit.record("dicom.peer.remove", username=admin.username, target=name, client_ip=ip)
    return Response(status_code=204)


def _seeds(adapters: StoreAdapters) -> peers.Seeds:
    return adapters.settings.store.peers


def _peer(adapters: StoreAdapters, name: str) -> DicomPeer:
    return peers.get_peer(adapters.engine, _seeds(adapters), name)


@router.post("/peers/{name}/echo")
def echo(adapters: AdaptersDep, name: str) -> EchoOut:
    """C-ECHO the peer (PS3.4 A.4)."""
    result = scu.echo(adapters.settings, _peer(adapters, name))
    return EchoOut(status=result.status, seconds=result.seconds)


@router.post("/peers/{name}/find")
def find(adapters: AdaptersDep, name: str, body: FindIn) -> list[dict[str, Any]]:
    """C-FIND on the peer (PS3.4 C.4.1); matches as DICOM JSON (PS3.18 F.2)."""
    peer = _peer(adapters, name)
    matches = scu.find(adapters.settings, peer, body.level, body.keys, body.model)
    return [match.to_json_dict() for match in matches]


@router.post("/peers/{name}/move")
def move(adapters: AdaptersDep, name: str, body: MoveIn) -> MoveOut:
    """C-MOVE on the peer (PS3.4 C.4.2), by default into this site; waits until done."""
    settings = adapters.settings
    destination = body.destination or settings.store.ae_title
    result = scu.move(
        settings, _peer(adapters, name), destination, body.level, body.keys, body.model
    )
    return MoveOut(
        status=result.status,
        completed=result.completed,
        failed=result.failed,
        warning=result.warning,
        failed_sop_instance_uids=result.failed_sop_instance_uids,
        error_comment=result.error_comment,
    )
