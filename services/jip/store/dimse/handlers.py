"""One function per DIMSE event; :mod:`jip.errors` become named statuses in one table.

Collaborators (catalog, storage, peers) arrive as bound arguments from
:func:`jip.store.dimse.ae.server_handlers`. C-STORE is in
:mod:`jip.store.dimse.storage_service`, shared with the fast path.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pynetdicom.events import Event

from jip import errors
from jip.config import DicomPeer
from jip.store.catalog import queries as catalog_query
from jip.store.catalog.catalog import Catalog, StoredInstance
from jip.store.catalog.queries import QueryLevel
from jip.store.dimse.contexts import QueryRetrieveModel, requested_contexts
from jip.store.dimse.status import (
    FindStatus,
    GeneralStatus,
    GetStatus,
    MoveStatus,
    status_dataset,
)
from jip.store.storage.port import BlobStorage

log = logging.getLogger(__name__)

# A C-MOVE destination AE title -> the peer it names, or None.
PeerLookup = Callable[[str], DicomPeer | None]
# A calling AE title -> the catalog as that AE may see it (jip.store.dimse.peers.callers_catalog).
CatalogFor = Callable[[str], Catalog]


class IdentifierMismatch(errors.Invalid):
    """The identifier does not fit the information model (PS3.4 0xA900)."""


# jip.errors -> named DIMSE statuses, per service (C-STORE's: storage_service). Most
# specific first: OutOfResources is an Unavailable, IdentifierMismatch an Invalid.
QUERY_ERROR_STATUS: list[tuple[type[errors.JipError], int]] = [
    (IdentifierMismatch, FindStatus.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS),
    (errors.Unavailable, FindStatus.OUT_OF_RESOURCES),
    (errors.Invalid, FindStatus.UNABLE_TO_PROCESS),
    (errors.NotFound, FindStatus.UNABLE_TO_PROCESS),
]
RETRIEVE_ERROR_STATUS: list[tuple[type[errors.JipError], int]] = [
    (IdentifierMismatch, MoveStatus.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS),
    (errors.Unavailable, MoveStatus.OUT_OF_RESOURCES_MATCHES),
    (errors.Invalid, MoveStatus.UNABLE_TO_PROCESS),
    (errors.NotFound, MoveStatus.UNABLE_TO_PROCESS),
]


def status_for(exc: Exception, table: errors.StatusTable) -> int:
    """The table's status for ``exc``; anything unexpected is a processing failure."""
    return errors.status_for(exc, table, default=GeneralStatus.PROCESSING_FAILURE)


# -- verification -----------------------------------------------------------------------------
def on_c_echo(event: Event) -> int:
    """C-ECHO (PS3.4 A.4): we are alive. Open to every caller that may associate: it
    shows nothing of the site's data, and it is how a site admin checks a new peer."""
    return GeneralStatus.SUCCESS


# -- query/retrieve ------------------------------------------------------------------------------
def on_c_find(event: Event, catalogs: CatalogFor) -> Iterator[tuple[int | Dataset, Dataset | None]]:
    """C-FIND (PS3.4 C.4.1): one pending response per match, then success.

    Each response holds exactly the requested keys (PS3.4 C.4.1.1.3.2), empty where the
    catalog has no value; 0xFF01 says an optional matching key was not supported. Only
    the series the calling AE may see match.
    """
    try:
        level, keys = query_keys(event)
        matches = catalog_query.find(catalogs(calling_ae(event)), level, keys)
    except Exception as exc:
        yield _failure(exc, QUERY_ERROR_STATUS, "C-FIND"), None
        return
    supported = catalog_query.supported_keywords(level) | _ANSWERED_KEYS
    ignored = any(value and key not in supported for key, value in keys.items())
    pending = FindStatus.PENDING_OPTIONAL_KEYS_NOT_SUPPORTED if ignored else FindStatus.PENDING
    our_ae = str(event.assoc.acceptor.ae_title)
    for match in matches:
        if event.is_cancelled:
            yield FindStatus.CANCEL, None
            return
        yield pending, find_response(event.identifier, match, level, our_ae)


def on_c_move(
    event: Event, catalogs: CatalogFor, storage: BlobStorage, destinations: PeerLookup
) -> Iterator[Any]:
    """C-MOVE (PS3.4 C.4.2): C-STORE the matches to a known peer.

    pynetdicom's protocol: yield the destination, then the number of sub-operations,
    then one (pending status, dataset) per instance; it sends and counts. The
    destination must be a peer (``store.peers`` or added at runtime, looked up by
    ``destinations`` at each request); the matches are those the calling AE may see.
    """
    destination = str(event.move_destination or "").strip()
    peer = destinations(destination)
    if peer is None:
        log.warning("C-MOVE to unknown destination", extra={"move_destination": destination})
        yield None, None  # pynetdicom answers 0xA801 Move Destination Unknown
        return
    try:
        instances = retrieve_instances(event, catalogs(calling_ae(event)))
    except Exception as exc:
        yield peer.host, peer.port
        yield 1
        yield _failure(exc, RETRIEVE_ERROR_STATUS, "C-MOVE"), None
        return
    pairs = [(i.sop_class_uid, i.transfer_syntax_uid) for i in instances]
    yield peer.host, peer.port, {"contexts": requested_contexts(pairs)}
    yield len(instances)
    yield from _sub_operations(event, instances, storage, MoveStatus.PENDING)


def on_c_get(event: Event, catalogs: CatalogFor, storage: BlobStorage) -> Iterator[Any]:
    """C-GET (PS3.4 C.4.3): C-STORE the matches back over the same association.

    The requestor must have proposed storage contexts with the SCP role for the
    stored SOP classes and transfer syntaxes; an instance without one fails.
    """
    try:
        instances = retrieve_instances(event, catalogs(calling_ae(event)))
    except Exception as exc:
        yield 1
        yield _failure(exc, RETRIEVE_ERROR_STATUS, "C-GET"), None
        return
    yield len(instances)
    yield from _sub_operations(event, instances, storage, GetStatus.PENDING)


def calling_ae(event: Event) -> str:
    """Who asks: the calling AE title (PS3.8 9.3.2); senders rarely offer a User Identity."""
    return str(event.assoc.requestor.ae_title).strip()


def _sub_operations(
    event: Event, instances: list[StoredInstance], storage: BlobStorage, pending: int
) -> Iterator[tuple[int, Dataset | None]]:
    for instance in instances:
        if event.is_cancelled:
            yield MoveStatus.CANCEL, None
            return
        yield pending, StoredFile(instance, storage)


def _failure(
    exc: Exception, table: Sequence[tuple[type[errors.JipError], int]], service: str
) -> Dataset:
    status = status_for(exc, table)
    if isinstance(exc, errors.JipError):
        log.warning(f"{service} refused", extra={"status": f"0x{status:04X}", "error": str(exc)})
        return status_dataset(status, str(exc))
    log.exception(f"{service} failed")
    return status_dataset(status, f"internal error: {type(exc).__name__}")


# -- identifiers -----------------------------------------------------------------------------------
_NOT_MATCHED = {"QueryRetrieveLevel", "SpecificCharacterSet"}
# Return keys we fill although the catalog does not hold them.
_ANSWERED_KEYS = {"RetrieveAETitle", "InstanceAvailability"}


def query_keys(event: Event) -> tuple[QueryLevel, dict[str, str]]:
    """The Query/Retrieve Level and the keys (keyword → PS3.4 C.2.2.2 match string)."""
    identifier: Dataset = event.identifier
    text = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    try:
        level = QueryLevel(text)
    except ValueError:
        raise IdentifierMismatch(
            f"QueryRetrieveLevel {text!r} is not PATIENT, STUDY, SERIES or IMAGE"
        ) from None
    model = QueryRetrieveModel(str(event.request.AffectedSOPClassUID))
    if level is QueryLevel.PATIENT and not model.is_patient_root:
        raise IdentifierMismatch("the Study Root model has no PATIENT level (PS3.4 C.6.2)")
    keys: dict[str, str] = {}
    for element in identifier:
        keyword = element.keyword
        if not keyword or keyword in _NOT_MATCHED or element.VR == "SQ":
            continue
        value = element.value
        if value is None:
            keys[keyword] = ""
        elif isinstance(value, MultiValue | list):
            keys[keyword] = "\\".join(str(v) for v in value)
        else:
            keys[keyword] = str(value).strip()
    return level, keys


def find_response(identifier: Dataset, match: Dataset, level: QueryLevel, our_ae: str) -> Dataset:
    """The requested keys with the match's values (PS3.4 C.4.1.1.3.2), empty if unknown."""
    response = Dataset()
    if "SpecificCharacterSet" in match:
        response.SpecificCharacterSet = match.SpecificCharacterSet
    response.QueryRetrieveLevel = level.value
    for element in identifier:
        keyword = element.keyword
        if keyword in _NOT_MATCHED:
            continue
        if keyword and keyword in match:
            response.add(match[keyword])
        elif keyword == "RetrieveAETitle":
            response.RetrieveAETitle = our_ae
        elif keyword == "InstanceAvailability":
            response.InstanceAvailability = "ONLINE"
        else:
            response.add(DataElement(element.tag, element.VR, None))
    return response


def retrieve_instances(event: Event, catalog: Catalog) -> list[StoredInstance]:
    """The stored instances a C-MOVE or C-GET identifier selects (PS3.4 C.4.2.2.1)."""
    level, keys = query_keys(event)
    matches = catalog_query.find(catalog, level, keys)
    found: dict[str, StoredInstance] = {}
    for match in matches:
        for instance in _instances_of(catalog, level, match):
            found.setdefault(instance.sop_instance_uid, instance)
    return list(found.values())


def _instances_of(catalog: Catalog, level: QueryLevel, match: Dataset) -> list[StoredInstance]:
    if level is QueryLevel.IMAGE:
        return [catalog.instance(match.SOPInstanceUID)]
    if level is QueryLevel.SERIES:
        return catalog.instances_of_series(match.SeriesInstanceUID)
    if level is QueryLevel.STUDY:
        return catalog.instances_of_study(match.StudyInstanceUID)
    studies = catalog_query.find(catalog, QueryLevel.STUDY, {"PatientID": str(match.PatientID)})
    return [i for study in studies for i in catalog.instances_of_study(study.StudyInstanceUID)]


class StoredFile(Dataset):
    """A stored instance on its way out of a C-MOVE or C-GET.

    A dataset only in name (it holds the two UIDs pynetdicom reports on failure); the
    association streams the stored file (:class:`jip.store.dimse.ae.StreamingAssociation`).
    """

    def __init__(self, instance: StoredInstance, storage: BlobStorage) -> None:
        super().__init__()
        self.SOPClassUID = instance.sop_class_uid
        self.SOPInstanceUID = instance.sop_instance_uid
        self.stored = instance
        self.storage = storage

    @property
    def transfer_syntax_uid(self) -> str:
        return self.stored.transfer_syntax_uid

    @contextlib.contextmanager
    def opened(self) -> Iterator[Path]:
        """A local path to the stored file (a temporary copy for remote storage)."""
        local = self.storage.local_path(self.stored.blob_key)
        if local is not None and local.is_file():
            yield local
            return
        fd, tmp = tempfile.mkstemp(suffix=".dcm")
        try:
            with os.fdopen(fd, "wb") as out, self.storage.open(self.stored.blob_key) as src:
                shutil.copyfileobj(src, out, 1024 * 1024)
            yield Path(tmp)
        finally:
            Path(tmp).unlink(missing_ok=True)
