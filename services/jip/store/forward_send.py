"""Sending stored series to a peer: C-STORE to a DICOM peer, STOW-RS to a DICOMweb one.

The one send path of the site: ``POST /api/dicom/send`` (the `send` workflow, the CLI,
the run page) and the forwarding rules (:mod:`jip.flow.forwarder`, which gets
:func:`send_series` from the composition) both call it, so a peer is reached only from
the platform, with its network and credentials, never from an operator. Files go as
stored: C-STORE streams their dataset bytes (:func:`jip.store.dimse.scu.send`); STOW-RS
sends the stored Part 10 files as the multipart body's parts (PS3.18 10.5).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient
from sqlalchemy import Engine

from jip import errors
from jip.config import DicomPeer, DicomWebPeer, Settings
from jip.store.catalog.catalog import Catalog, StoredInstance
from jip.store.dimse import peers, scu
from jip.store.storage.port import BlobStorage

log = logging.getLogger(__name__)

STOW_BATCH = 50  # instances per STOW-RS request: bounded memory, few round trips
Target = DicomPeer | DicomWebPeer


@dataclass(frozen=True)
class SeriesSent:
    """What reached the peer of one series."""

    series_instance_uid: str
    sent: int
    failed: int
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.failed == 0


@dataclass
class SendResult:
    peer: str
    protocol: str  # "dimse" or "dicomweb"
    series: list[SeriesSent] = field(default_factory=list)

    @property
    def failed(self) -> list[SeriesSent]:
        return [s for s in self.series if not s.ok]


def peer_names(engine: Engine, settings: Settings) -> dict[str, str]:
    """Every peer one may send to, by name, with its protocol (``dimse`` or ``dicomweb``)."""
    names = {item.name: "dimse" for item in peers.list_peers(engine, settings.store.peers)}
    names.update(dict.fromkeys(settings.forward.dicomweb_peers, "dicomweb"))
    return dict(sorted(names.items()))


def target(engine: Engine, settings: Settings, name: str) -> Target:
    """The peer ``name``: a DICOMweb peer (``forward.dicomweb_peers``) or a DICOM peer."""
    web = settings.forward.dicomweb_peers.get(name)
    if web is not None:
        return web
    if name not in peer_names(engine, settings):
        known = ", ".join(peer_names(engine, settings)) or "none configured"
        raise errors.NotFound(
            f"unknown peer {name!r}; known peers: {known} (add one under /ui/admin/peers)"
        )
    return peers.get_peer(engine, settings.store.peers, name)


def send_series(
    *,
    settings: Settings,
    catalog: Catalog,
    storage: BlobStorage,
    peer: str,
    series_uids: Sequence[str],
    progress: Callable[[SeriesSent], None] | None = None,
) -> SendResult:
    """Send every instance of ``series_uids`` to ``peer``, one series after the other.

    ``catalog`` is the caller's (scoped) catalog: a series outside it is NotFound before
    anything is sent. A peer that cannot be reached raises Unavailable; instances the
    peer refused are counted in the result.
    """
    uids = list(dict.fromkeys(series_uids))
    if not uids:
        raise errors.Invalid("no series to send: name at least one SeriesInstanceUID")
    instances = {uid: catalog.instances_of_series(uid) for uid in uids}  # NotFound first
    where = target(catalog.engine, settings, peer)
    result = SendResult(peer, "dicomweb" if isinstance(where, DicomWebPeer) else "dimse")
    for uid in uids:
        with _files(storage, instances[uid]) as paths:
            if isinstance(where, DicomWebPeer):
                sent = _stow(where, uid, paths)
            else:
                sent = _c_store(settings, where, uid, paths)
        result.series.append(sent)
        log.info(
            "series sent",
            extra={
                "series_instance_uid": uid,
                "peer": peer,
                "sent": sent.sent,
                "failed": sent.failed,
            },
        )
        if progress is not None:
            progress(sent)
    return result


@contextlib.contextmanager
def _files(storage: BlobStorage, instances: list[StoredInstance]) -> Iterator[list[Path]]:
    """The instances' files on disk: in place for ``file://``, else copied to a temp dir."""
    local = [storage.local_path(i.blob_key) for i in instances]
    if all(path is not None for path in local):
        yield [path for path in local if path is not None]
        return
    folder = Path(tempfile.mkdtemp(prefix="jip-send-"))
    try:
        paths = []
        for n, instance in enumerate(instances):
            path = folder / f"{n:06d}.dcm"
            with storage.open(instance.blob_key) as source, path.open("wb") as sink:
                shutil.copyfileobj(source, sink, 1024 * 1024)
            paths.append(path)
        yield paths
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _c_store(settings: Settings, peer: DicomPeer, uid: str, paths: list[Path]) -> SeriesSent:
    report = scu.send(settings, peer, paths)  # Unavailable when no association comes up
    failed = report.failed
    error = ""
    if failed:
        first = failed[0]
        answered = f"status 0x{first.status:04X}" if first.status is not None else "not sent"
        error = f"{peer.ae_title}: {first.error or answered}"
    return SeriesSent(uid, report.sent, len(failed), error)


def _stow(peer: DicomWebPeer, uid: str, paths: list[Path]) -> SeriesSent:
    headers = {"Authorization": f"Bearer {peer.token.get_secret_value()}"} if peer.token else None
    client = DICOMwebClient(url=peer.url, headers=headers)
    sent, failed, error = 0, 0, ""
    for start in range(0, len(paths), STOW_BATCH):
        batch = [pydicom.dcmread(path) for path in paths[start : start + STOW_BATCH]]
        try:
            response = client.store_instances(batch)
        except Exception as exc:  # requests' errors: connection refused, HTTP 4xx/5xx
            if sent == 0 and _unreachable(exc):
                raise errors.Unavailable(f"cannot reach {peer.url}: {exc}") from exc
            failed += len(batch)
            error = error or f"STOW-RS to {peer.url} failed: {exc}"
            continue
        refused = len(response.get("FailedSOPSequence", []) or []) if response else 0
        failed += refused
        sent += len(batch) - refused
        if refused and not error:
            error = f"{peer.url} refused {refused} instance(s) (FailedSOPSequence)"
    return SeriesSent(uid, sent, failed, error)


def _unreachable(exc: Exception) -> bool:
    return isinstance(exc, requests.ConnectionError | requests.Timeout)


class StoredSeriesSender:
    """:func:`send_series` for one series over the whole catalog, raising when anything
    was not sent: the forwarder's sender (``jip.flow.forwarder.SeriesSender``)."""

    def __init__(self, *, settings: Settings, catalog: Catalog, storage: BlobStorage) -> None:
        self.settings = settings
        self.catalog = catalog
        self.storage = storage

    def __call__(self, peer: str, series_instance_uid: str) -> None:
        result = send_series(
            settings=self.settings,
            catalog=self.catalog,
            storage=self.storage,
            peer=peer,
            series_uids=[series_instance_uid],
        )
        for series in result.failed:
            total = series.sent + series.failed
            raise errors.Unavailable(
                f"{series.failed} of {total} instances not sent: {series.error}"
            )
