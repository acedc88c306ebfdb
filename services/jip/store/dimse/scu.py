"""Our side as SCU: C-ECHO, C-STORE, C-FIND and C-MOVE towards a remote AE.

Functions for the CLI (`jip dicom ...`) and the HTTP API (``/api/dicom``). Each opens
one association (two or more for C-STORE of more than 128 kinds of files, the PS3.8
limit on presentation contexts), does its work and releases it. Files are sent as
they are on disk: their dataset bytes are streamed, never decoded (uncompressed files
may be converted to another uncompressed syntax the peer prefers).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.filereader import read_file_meta_info
from pynetdicom import StoragePresentationContexts, build_context, build_role, evt
from pynetdicom.association import Association

from jip import errors
from jip.config import DicomPeer, Settings
from jip.store.catalog.queries import QueryLevel
from jip.store.dimse.ae import JipAE, configure_pynetdicom, send_path
from jip.store.dimse.contexts import (
    STORAGE_TRANSFER_SYNTAXES,
    VERIFICATION,
    QueryRetrieveModel,
    requested_contexts,
)
from jip.store.dimse.status import is_pending, is_success, is_warning

log = logging.getLogger(__name__)

Model = Literal["study", "patient"]
_FIND = {
    "study": QueryRetrieveModel.STUDY_ROOT_FIND,
    "patient": QueryRetrieveModel.PATIENT_ROOT_FIND,
}
_MOVE = {
    "study": QueryRetrieveModel.STUDY_ROOT_MOVE,
    "patient": QueryRetrieveModel.PATIENT_ROOT_MOVE,
}
_GET = {
    "study": QueryRetrieveModel.STUDY_ROOT_GET,
    "patient": QueryRetrieveModel.PATIENT_ROOT_GET,
}
_MAX_CONTEXTS = 128  # PS3.8 §9.3.2.2: context IDs are odd numbers 1-255


@dataclass(frozen=True)
class EchoResult:
    status: int
    seconds: float


@dataclass(frozen=True)
class SentFile:
    path: Path
    status: int | None  # None: not sent (unreadable, no accepted context, connection lost)
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status is not None and (is_success(self.status) or is_warning(self.status))


@dataclass
class SendReport:
    files: list[SentFile] = field(default_factory=list)

    @property
    def sent(self) -> int:
        return sum(f.ok for f in self.files)

    @property
    def failed(self) -> list[SentFile]:
        return [f for f in self.files if not f.ok]


@dataclass(frozen=True)
class MoveProgress:
    remaining: int
    completed: int
    failed: int
    warning: int


@dataclass(frozen=True)
class MoveResult:
    status: int
    completed: int
    failed: int
    warning: int
    failed_sop_instance_uids: list[str]
    error_comment: str = ""


def scu_ae(settings: Settings) -> JipAE:
    """Our AE as association requestor, with the site's AE title and timeouts."""
    configure_pynetdicom()
    store = settings.store
    ae = JipAE(ae_title=store.ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = store.network_timeout_s
    ae.connection_timeout = store.network_timeout_s
    return ae


def _associate(ae: JipAE, peer: DicomPeer, contexts: list[object], **extra: Any) -> Association:
    where = f"{peer.ae_title}@{peer.host}:{peer.port}"
    try:
        assoc = ae.associate(
            peer.host, peer.port, contexts=contexts, ae_title=peer.ae_title, **extra
        )
    except (OSError, UnicodeError) as exc:  # a host that does not resolve; an empty or
        # over-long label ("a..b"), which the IDNA codec refuses before any lookup
        reason = getattr(exc, "strerror", None) or exc
        raise errors.Unavailable(
            f"cannot reach {where}: {reason}; check the peer's host and port"
        ) from exc
    if assoc.is_established:
        return assoc
    if assoc.is_rejected:
        raise errors.Forbidden(f"{where} rejected the association (is our AE title known there?)")
    raise errors.Unavailable(f"no association with {where}: connection failed or aborted")


def echo(settings: Settings, peer: DicomPeer) -> EchoResult:
    """C-ECHO (PS3.4 A.4) and its round-trip time."""
    ae = scu_ae(settings)
    start = time.perf_counter()
    assoc = _associate(ae, peer, [build_context(VERIFICATION)])
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    return EchoResult(int(getattr(status, "Status", 0xFFFF)), time.perf_counter() - start)


# -- C-STORE ------------------------------------------------------------------------------------
def dicom_files(paths: Iterable[Path]) -> Iterator[Path]:
    """The files named and every file under the folders named, in a stable order."""
    for path in paths:
        if path.is_dir():
            yield from sorted(
                p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")
            )
        else:
            yield path


def send(
    settings: Settings,
    peer: DicomPeer,
    paths: Iterable[Path],
    progress: Callable[[SentFile], None] | None = None,
) -> SendReport:
    """C-STORE (PS3.4 B.2) every Part 10 file in ``paths`` to ``peer``."""
    report = SendReport()

    def record(result: SentFile) -> None:
        report.files.append(result)
        if progress is not None:
            progress(result)

    kinds: dict[tuple[str, str], list[Path]] = {}
    for path in dicom_files(paths):
        try:
            meta = read_file_meta_info(path)
            key = (str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID))
        except Exception as exc:
            record(SentFile(path, None, f"not a DICOM Part 10 file: {exc}"))
            continue
        kinds.setdefault(key, []).append(path)
    ae = scu_ae(settings)
    batches = list(kinds.items())
    for start in range(0, len(batches), _MAX_CONTEXTS):
        batch = dict(batches[start : start + _MAX_CONTEXTS])
        _send_batch(ae, peer, batch, record)
    return report


def _send_batch(
    ae: JipAE,
    peer: DicomPeer,
    kinds: dict[tuple[str, str], list[Path]],
    record: Callable[[SentFile], None],
) -> None:
    assoc = _associate(ae, peer, requested_contexts(list(kinds)))
    try:
        for (_, syntax), files in kinds.items():
            for path in files:
                record(_send_one(assoc, path, syntax))
    finally:
        if assoc.is_established:
            assoc.release()


def _send_one(assoc: Association, path: Path, syntax: str) -> SentFile:
    if not assoc.is_established:
        return SentFile(path, None, "association lost")
    try:
        status = send_path(assoc, path, syntax)
    except ValueError as exc:  # no accepted context for this SOP class / syntax
        return SentFile(path, None, str(exc))
    code = getattr(status, "Status", None)
    if code is None:
        return SentFile(path, None, "no response (timeout or abort)")
    return SentFile(path, int(code), str(status.get("ErrorComment", "") or ""))


# -- C-FIND and C-MOVE ---------------------------------------------------------------------------
def identifier(level: QueryLevel, keys: dict[str, str]) -> Dataset:
    """A query identifier (PS3.4 C.4.1.1.3): the level, then each key and match string."""
    ds = Dataset()
    ds.QueryRetrieveLevel = level.value
    for keyword, value in keys.items():
        tag = tag_for_keyword(keyword)
        if tag is None:
            raise errors.Invalid(f"{keyword!r} is not a DICOM keyword")
        # DataElement, not setattr: match strings (ranges, wildcards) need no VR check.
        ds.add(DataElement(tag, dictionary_VR(tag), value or None))
    return ds


def find(
    settings: Settings,
    peer: DicomPeer,
    level: QueryLevel,
    keys: dict[str, str],
    model: Model = "study",
) -> list[Dataset]:
    """C-FIND (PS3.4 C.4.1): every match ``peer`` returns for ``keys`` at ``level``."""
    query = identifier(level, keys)
    ae = scu_ae(settings)
    assoc = _associate(ae, peer, [build_context(_FIND[model].value)])
    matches: list[Dataset] = []
    try:
        for status, found in assoc.send_c_find(query, _FIND[model].value):
            code = int(getattr(status, "Status", 0xFFFF))
            if is_pending(code) and found is not None:
                matches.append(found)
            elif not is_pending(code):
                _raise_unless_success(code, status, "C-FIND", peer)
    finally:
        if assoc.is_established:
            assoc.release()
    return matches


def move(
    settings: Settings,
    peer: DicomPeer,
    destination_ae: str,
    level: QueryLevel,
    keys: dict[str, str],
    model: Model = "study",
    progress: Callable[[MoveProgress], None] | None = None,
) -> MoveResult:
    """C-MOVE (PS3.4 C.4.2): ask ``peer`` to C-STORE the matches to ``destination_ae``.

    Moving from a PACS to this site is ``destination_ae = settings.store.ae_title``
    (the PACS must know our AE title, host and port).
    """
    query = identifier(level, keys)
    ae = scu_ae(settings)
    assoc = _associate(ae, peer, [build_context(_MOVE[model].value)])
    responses = assoc.send_c_move(query, destination_ae, _MOVE[model].value)
    return _retrieved(assoc, responses, "C-MOVE", peer, progress)


# What the C-GET requestor does with each instance the peer sends on the association:
# the C-STORE event in, a status (or status data set) out.
GetStoreHandler = Callable[[Any], "int | Dataset"]


def get(
    settings: Settings,
    peer: DicomPeer,
    level: QueryLevel,
    keys: dict[str, str],
    on_store: GetStoreHandler,
    model: Model = "study",
    progress: Callable[[MoveProgress], None] | None = None,
) -> MoveResult:
    """C-GET (PS3.4 C.4.3): the peer sends the matches back on our own association.

    For a peer that cannot open a connection to us (no route, or our AE unknown there).
    We propose the Storage SOP classes with the SCP role (PS3.7 D.3.3.4), one context
    fewer than the PS3.8 limit of 128 to leave room for the C-GET one; ``on_store``
    stores each instance as the listener would.
    """
    query = identifier(level, keys)
    ae = scu_ae(settings)
    storage = [str(cx.abstract_syntax) for cx in StoragePresentationContexts]
    storage = storage[: _MAX_CONTEXTS - 1]
    syntaxes: list[str] = list(STORAGE_TRANSFER_SYNTAXES)
    contexts: list[object] = [build_context(_GET[model].value)]
    contexts += [build_context(sop_class, syntaxes) for sop_class in storage]
    roles = [build_role(sop_class, scp_role=True) for sop_class in storage]
    handlers = [(evt.EVT_C_STORE, on_store)]
    assoc = _associate(ae, peer, contexts, ext_neg=roles, evt_handlers=handlers)
    responses = assoc.send_c_get(query, _GET[model].value)
    return _retrieved(assoc, responses, "C-GET", peer, progress)


def _retrieved(
    assoc: Association,
    responses: Iterator[tuple[Dataset, Dataset | None]],
    service: str,
    peer: DicomPeer,
    progress: Callable[[MoveProgress], None] | None,
) -> MoveResult:
    """The final result of a C-MOVE or C-GET, reporting each pending response."""
    final: Dataset | None = None
    final_identifier: Dataset | None = None
    try:
        for status, found in responses:
            code = int(getattr(status, "Status", 0xFFFF))
            if is_pending(code):
                if progress is not None:
                    progress(_move_progress(status))
                continue
            final, final_identifier = status, found
    finally:
        if assoc.is_established:
            assoc.release()
    if final is None or "Status" not in final:
        raise errors.Unavailable(
            f"{service} on {peer.ae_title}: no final response (timeout or abort)"
        )
    code = int(final.Status)
    counts = _move_progress(final)
    if not (is_success(code) or is_warning(code)) and counts.completed == 0:
        _raise_unless_success(code, final, service, peer)
    failed_uids = []
    if final_identifier is not None and "FailedSOPInstanceUIDList" in final_identifier:
        value = final_identifier.FailedSOPInstanceUIDList
        failed_uids = [str(v) for v in (value if isinstance(value, list | tuple) else [value]) if v]
    return MoveResult(
        code,
        counts.completed,
        counts.failed,
        counts.warning,
        failed_uids,
        str(final.get("ErrorComment", "") or ""),
    )


def _move_progress(status: Dataset) -> MoveProgress:
    def count(keyword: str) -> int:
        return int(status.get(keyword, 0) or 0)

    return MoveProgress(
        count("NumberOfRemainingSuboperations"),
        count("NumberOfCompletedSuboperations"),
        count("NumberOfFailedSuboperations"),
        count("NumberOfWarningSuboperations"),
    )


def _raise_unless_success(code: int, status: Dataset, service: str, peer: DicomPeer) -> None:
    if is_success(code) or is_warning(code):
        return
    comment = str(status.get("ErrorComment", "") or "")
    message = f"{service} on {peer.ae_title} failed with status 0x{code:04X}" + (
        f": {comment}" if comment else ""
    )
    if code == 0xA801:
        raise errors.NotFound(message + " (move destination unknown to the peer)")
    if 0xA900 <= code <= 0xA9FF or 0xC000 <= code <= 0xCFFF:
        raise errors.Invalid(message)
    raise errors.Unavailable(message)
