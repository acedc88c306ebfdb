"""C-STORE as SCP (PS3.4 B.2.2): check, decide who may store, ingest, answer.

Shared by pynetdicom's handler (:func:`on_c_store`) and the storage fast path
(:mod:`jip.store.dimse.session`). A received data set is spooled to a Part 10 file whose
File Meta holds the command's Affected SOP Class and Instance UIDs (both paths write it
so); before anything is stored:

- the data set must be what the command says: its SOP Class UID and SOP Instance UID
  equal the command's Affected SOP Class/Instance UIDs (PS3.4 B.2.2: the Affected SOP
  Instance UID identifies the instance stored), else 0xA900 "Data Set does not match
  SOP Class" with the offending element and both UIDs in the comment and the log;
- the caller must be allowed to (:class:`jip.store.dimse.access.StoreAccess`), else
  0x0124 "Not authorised" (PS3.7 C.5) saying why.

Nothing is stored on a refusal: the spool file is removed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event

from jip import errors, metrics
from jip.store.dicom_file import InstanceHeader, read_header, read_header_bytes
from jip.store.dimse.access import Caller, StoreAccess, not_a_peer
from jip.store.dimse.status import GeneralStatus, StorageStatus, status_dataset
from jip.store.ingest import Ingestor

log = logging.getLogger(__name__)

SOP_CLASS_UID = 0x00080016
SOP_INSTANCE_UID = 0x00080018

# jip.errors -> C-STORE statuses. Most specific first: OutOfResources is an Unavailable.
STORE_ERROR_STATUS: list[tuple[type[errors.JipError], int]] = [
    (errors.Unavailable, StorageStatus.OUT_OF_RESOURCES),  # incl. OutOfResources
    (errors.Invalid, StorageStatus.CANNOT_UNDERSTAND),
]


@dataclass(frozen=True)
class StoreRequest:
    """A received C-STORE: its data set (spooled, or in memory) and what its command said."""

    path: Path | None  # the spool file, or None: the bytes are in ``data``
    sop_class_uid: str  # Affected SOP Class UID (0000,0002)
    sop_instance_uid: str  # Affected SOP Instance UID (0000,1000)
    data: bytes | None = None  # the Part 10 file's bytes, where the receiver holds them

    def discard(self) -> None:
        """Remove the spool file (a refused or failed instance)."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)


@dataclass(frozen=True)
class StoreAnswer:
    """The C-STORE response's status, Error Comment and Offending Element."""

    status: int
    comment: str | None = None
    offending: tuple[int, ...] = field(default=())

    def dataset(self) -> Dataset | int:
        if not self.comment and not self.offending:
            return self.status
        ds = status_dataset(self.status, self.comment or "")
        if self.offending:
            ds.OffendingElement = [Tag(tag) for tag in self.offending]
        return ds


# (caller, request) -> answer: what the fast path calls for each instance.
StoreHandler = Callable[[Caller, StoreRequest], StoreAnswer]


def store_file(
    ingestor: Ingestor, access: StoreAccess, caller: Caller, request: StoreRequest
) -> StoreAnswer:
    """:func:`_store_file`, counted and timed for /metrics."""
    with metrics.CSTORE_SECONDS.time():
        answer = _store_file(ingestor, access, caller, request)
    metrics.CSTORE_TOTAL.labels(_outcome(answer.status)).inc()
    return answer


def _outcome(status: int) -> str:
    if status == StorageStatus.SUCCESS:
        return "success"
    refusals = (GeneralStatus.NOT_AUTHORISED, StorageStatus.DATA_SET_DOES_NOT_MATCH_SOP_CLASS)
    return "refused" if status in refusals else "failed"


def _store_file(
    ingestor: Ingestor, access: StoreAccess, caller: Caller, request: StoreRequest
) -> StoreAnswer:
    """Ingest a spooled C-STORE data set if it may be; the answer once it is durable.

    A known SOP Instance UID, with the same or different bytes, is a success: the
    ingest keeps the first and records the conflict (DESIGN.md, "Facts about DICOM
    ingest"). Truncated or unparseable data is a 0xC000 failure naming the problem.
    """
    try:
        refused, header = _checked(access, caller, request)
        if refused is not None:
            request.discard()
            return refused
        if request.data is not None:
            ingestor.ingest_bytes(request.data, caller.ae_title, header=header)
        else:
            assert request.path is not None
            ingestor.ingest_file(request.path, caller.ae_title, header=header)
    except Exception as exc:
        request.discard()
        status = errors.status_for(
            exc, STORE_ERROR_STATUS, default=GeneralStatus.PROCESSING_FAILURE
        )
        if isinstance(exc, errors.JipError):
            log.warning(
                "C-STORE refused",
                extra={
                    "calling_ae": caller.ae_title,
                    "status": f"0x{status:04X}",
                    "error": str(exc),
                },
            )
            return StoreAnswer(status, str(exc))
        log.exception("C-STORE failed", extra={"calling_ae": caller.ae_title})
        return StoreAnswer(status, f"internal error: {type(exc).__name__}")
    return StoreAnswer(StorageStatus.SUCCESS)


def _checked(
    access: StoreAccess, caller: Caller, request: StoreRequest
) -> tuple[StoreAnswer | None, InstanceHeader | None]:
    """(the refusal, or None; the header read for the checks, handed on to the ingest)."""
    if not caller.is_peer and not access.unknown_ae_store:
        # Refused before the data set is even read: nothing of it is looked at.
        return _not_authorised(caller, not_a_peer(caller.ae_title)), None
    # Invalid, as the ingest would raise it
    if request.data is not None:
        header = read_header_bytes(request.data)
    else:
        assert request.path is not None
        header = read_header(request.path)
    mismatch = _mismatch(header, request)
    if mismatch is not None:
        return mismatch, header
    why = access.refusal(caller, header)
    return (None if why is None else _not_authorised(caller, why)), header


def _not_authorised(caller: Caller, why: str) -> StoreAnswer:
    log.warning("C-STORE not authorised", extra={"calling_ae": caller.ae_title, "error": why})
    return StoreAnswer(GeneralStatus.NOT_AUTHORISED, why)


def _mismatch(header: InstanceHeader, request: StoreRequest) -> StoreAnswer | None:
    """0xA900 if the data set is not the instance the command announced."""
    for tag, name, in_data, in_command in (
        (SOP_INSTANCE_UID, "SOP Instance UID", header.sop_instance_uid, request.sop_instance_uid),
        (SOP_CLASS_UID, "SOP Class UID", header.sop_class_uid, request.sop_class_uid),
    ):
        if in_data != in_command:
            log.warning(
                "C-STORE data set does not match its command",
                extra={"element": name, "data_set": in_data, "command": in_command},
            )
            comment = f"{name} {in_data} in data set, {in_command} in command"
            return StoreAnswer(StorageStatus.DATA_SET_DOES_NOT_MATCH_SOP_CLASS, comment, (tag,))
    return None


def on_c_store(
    event: Event, ingestor: Ingestor, access: StoreAccess, identify: Callable[[str], Caller]
) -> int | Dataset:
    """C-STORE through pynetdicom (associations the fast path does not take)."""
    command = event.request
    assert isinstance(command, C_STORE)
    request = StoreRequest(
        Path(event.dataset_path),
        str(command.AffectedSOPClassUID or ""),
        str(command.AffectedSOPInstanceUID or ""),
    )
    return store_file(ingestor, access, caller_of(event, identify), request).dataset()


def caller_of(event: Event, identify: Callable[[str], Caller]) -> Caller:
    """The association's caller, looked up once per association."""
    assoc = event.assoc
    caller: Caller | None = getattr(assoc, "jip_caller", None)
    if caller is None:
        caller = identify(str(assoc.requestor.ae_title))
        assoc.jip_caller = caller  # type: ignore[attr-defined]
    return caller
