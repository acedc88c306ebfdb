"""``/api/dicom``: C-ECHO, C-FIND and C-MOVE towards the configured peers.

Site admins only: a query reaches the whole hospital PACS, outside any project. Peers
are named in ``store.peers``; the API never takes a host and port, so it cannot be
used to scan the network. Calls block on the network, so the routes are sync
functions (FastAPI runs them in its thread pool).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from jip.base.auth import require_admin
from jip.config import DicomPeer
from jip.store import scu
from jip.store.catalog_query import QueryLevel
from jip.store.deps import SettingsDep

router = APIRouter(prefix="/api/dicom", tags=["dicom"], dependencies=[Depends(require_admin)])


class PeerOut(BaseModel):
    name: str
    ae_title: str
    host: str
    port: int


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
def peers(settings: SettingsDep) -> list[PeerOut]:
    """The configured remote AEs."""
    return [PeerOut(name=name, **peer.model_dump()) for name, peer in settings.store.peers.items()]


def _peer(settings: SettingsDep, name: str) -> DicomPeer:
    return scu.resolve_peer(settings, name)


@router.post("/peers/{name}/echo")
def echo(settings: SettingsDep, name: str) -> EchoOut:
    """C-ECHO the peer (PS3.4 A.4)."""
    result = scu.echo(settings, _peer(settings, name))
    return EchoOut(status=result.status, seconds=result.seconds)


@router.post("/peers/{name}/find")
def find(settings: SettingsDep, name: str, body: FindIn) -> list[dict[str, Any]]:
    """C-FIND on the peer (PS3.4 C.4.1); matches as DICOM JSON (PS3.18 F.2)."""
    matches = scu.find(settings, _peer(settings, name), body.level, body.keys, body.model)
    return [match.to_json_dict() for match in matches]


@router.post("/peers/{name}/move")
def move(settings: SettingsDep, name: str, body: MoveIn) -> MoveOut:
    """C-MOVE on the peer (PS3.4 C.4.2), by default into this site; waits until done."""
    destination = body.destination or settings.store.ae_title
    result = scu.move(
        settings, _peer(settings, name), destination, body.level, body.keys, body.model
    )
    return MoveOut(
        status=result.status,
        completed=result.completed,
        failed=result.failed,
        warning=result.warning,
        failed_sop_instance_uids=result.failed_sop_instance_uids,
        error_comment=result.error_comment,
    )
