"""``POST /api/dicom/send``: send series to a peer (C-STORE or STOW-RS), and who may.

Sending copies patient data out of the site, so it needs two rights: reading each
series (the caller's projects, as every read) and sending (site admins, and the
usernames in ``forward.senders``). A workflow run sends with its own token; it may send
when who started it may. Every send, refused ones too, is in the audit log. The call
blocks on the network, so the route is a sync function (FastAPI's thread pool).
"""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from jip import errors
from jip.base import (
    AuditDep,
    ClientIpDep,
    CurrentUser,
    CurrentUserDep,
    Users,
    UsersDep,
    project_scope,
)
from jip.config import Settings
from jip.store.deps import AdaptersDep
from jip.store.forward_send import peer_names, send_series

router = APIRouter(prefix="/api/dicom", tags=["dicom"])
MAX_SERIES = 10_000


class SendIn(BaseModel):
    peer: str = Field(min_length=1, max_length=64)
    series: list[str] = Field(min_length=1, max_length=MAX_SERIES)


class SeriesSentOut(BaseModel):
    series_instance_uid: str
    sent: int
    failed: int
    error: str = ""


class SendOut(BaseModel):
    peer: str
    protocol: str
    sent: int
    failed: int
    series: list[SeriesSentOut]


class SendPeerOut(BaseModel):
    name: str
    protocol: str


def may_send(user: CurrentUser, settings: Settings, users: Users) -> bool:
    """Admins and ``forward.senders`` may; a run's token may when its starter may."""
    senders = set(settings.forward.senders)
    if user.is_admin or user.username in senders:
        return True
    starter = user.started_by if user.run_id else None
    if not starter:
        return False
    if starter in senders:
        return True
    try:
        return users.get(starter).is_admin
    except errors.NotFound:  # a starter removed since, or a rule's service name
        return False


def check_sender(user: CurrentUser, settings: Settings, users: Users) -> None:
    if not may_send(user, settings, users):
        raise errors.Forbidden(
            f"{user.username} may not send to peers: site admins may, and the users a site "
            "admin lists in forward.senders"
        )


@router.get("/send/peers")
def send_peers(adapters: AdaptersDep, user: CurrentUserDep, users: UsersDep) -> list[SendPeerOut]:
    """The peers one may send to (names and protocols only), for those who may send."""
    check_sender(user, adapters.settings, users)
    names = peer_names(adapters.engine, adapters.settings)
    return [SendPeerOut(name=name, protocol=protocol) for name, protocol in names.items()]


@router.post("/send")
def send(
    body: SendIn,
    adapters: AdaptersDep,
    user: CurrentUserDep,
    users: UsersDep,
    audit: AuditDep,
    ip: ClientIpDep,
) -> SendOut:
    """Send every instance of the series to the peer; waits until done.

    403 for who may not send, 404 for a series outside the caller's projects or an
    unknown peer, 503 when the peer cannot be reached; instances the peer refused are
    counted per series (``failed``, ``error``).
    """
    detail: dict[str, object] = {"peer": body.peer, "series": body.series[:100]}
    try:
        check_sender(user, adapters.settings, users)
        result = send_series(
            settings=adapters.settings,
            catalog=adapters.catalog.scoped(project_scope(user)),
            storage=adapters.storage,
            peer=body.peer,
            series_uids=body.series,
        )
    except errors.JipError as exc:
        detail["error"] = str(exc)
        audit.record(
            "dicom.send.refused" if isinstance(exc, errors.Forbidden) else "dicom.send.failed",
            username=user.username,
            target=body.peer,
            detail=detail,
            client_ip=ip,
        )
        raise
    out = [SeriesSentOut(**vars(s)) for s in result.series]
    detail |= {"sent": sum(s.sent for s in out), "failed": sum(s.failed for s in out)}
    audit.record(
        "dicom.send", username=user.username, target=body.peer, detail=detail, client_ip=ip
    )
    return SendOut(
        peer=result.peer,
        protocol=result.protocol,
        sent=sum(s.sent for s in out),
        failed=sum(s.failed for s in out),
        series=out,
    )
