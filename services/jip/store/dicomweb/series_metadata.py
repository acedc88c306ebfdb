"""Series metadata (WADO-RS ``/metadata``), fast enough for a viewer's first display.

Two cache levels:

* each instance's DICOM JSON header lives in the catalog's ``header_json`` column,
  computed on first use from the file header (pixel data is never read);
* the assembled JSON array of a series is kept in memory (LRU, bounded in bytes) and on
  disk, keyed by a fingerprint of the series' instances and their blob keys. A new,
  replaced or deleted instance changes the fingerprint, so a stale array is never
  served; :meth:`SeriesMetadata.invalidate` drops it eagerly on delete.

Cached JSON holds BulkDataURIs relative to the DICOMweb root (``/studies/…``); the
route makes them absolute with one byte replacement per response, so the same cache
serves every host name and reverse-proxy prefix.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import struct
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import pydicom
from pydicom.uid import UID
from sqlalchemy import func, select

from jip.store.catalog.catalog import Catalog, StoredInstance
from jip.store.catalog.projects import Scope, series_in_scope
from jip.store.catalog.tables import Instance, Series
from jip.store.dicom_file import PIXEL_DATA_TAGS, header_json
from jip.store.storage.port import BlobStorage

log = logging.getLogger(__name__)

JsonObject = dict[str, Any]
_BULK_URI_KEY = b'"BulkDataURI": "/'


def instance_path(instance: StoredInstance) -> str:
    return (
        f"/studies/{instance.study_instance_uid}/series/{instance.series_instance_uid}"
        f"/instances/{instance.sop_instance_uid}"
    )


def absolute_bulk_uris(payload: bytes, base_url: str) -> bytes:
    """Prefix every relative BulkDataURI in serialized DICOM JSON with ``base_url``.

    The key with its quotes only occurs as JSON structure: quotes inside values are
    escaped, so no attribute value can be mistaken for it.
    """
    prefix = json.dumps(base_url)[1:-1].encode()
    return payload.replace(_BULK_URI_KEY, b'"BulkDataURI": "' + prefix + b"/")


def with_relative_uris(header: JsonObject, instance: StoredInstance) -> JsonObject:
    """``bulk:<tag>`` placeholders → ``/studies/…/instances/…/bulkdata/<path>``.

    Nested bulk data gets a path through its sequences: ``<seq tag>/<item>/<tag>``
    (items counted from 1), which the bulkdata resource walks back.
    """
    result = _rewrite(header, instance_path(instance) + "/bulkdata")
    result["00083002"] = {"vr": "UI", "Value": [instance.transfer_syntax_uid]}
    return result


def catalogued_header(instance: StoredInstance) -> JsonObject:
    """The few attributes the catalog holds, for an instance whose file pydicom cannot read."""
    return {
        "00080016": {"vr": "UI", "Value": [instance.sop_class_uid]},
        "00080018": {"vr": "UI", "Value": [instance.sop_instance_uid]},
        "0020000D": {"vr": "UI", "Value": [instance.study_instance_uid]},
        "0020000E": {"vr": "UI", "Value": [instance.series_instance_uid]},
    }


def _rewrite(obj: JsonObject, prefix: str) -> JsonObject:
    out: JsonObject = {}
    for tag, element in obj.items():
        uri = element.get("BulkDataURI")
        if isinstance(uri, str) and uri.startswith("bulk:"):
            element = {**element, "BulkDataURI": f"{prefix}/{tag}"}
        elif element.get("vr") == "SQ" and element.get("Value"):
            items = [
                _rewrite(item, f"{prefix}/{tag}/{number}")
                for number, item in enumerate(element["Value"], start=1)
            ]
            element = {**element, "Value": items}
        out[tag] = element
    return dict(sorted(out.items()))


def read_header(handle: BinaryIO) -> JsonObject:
    """DICOM JSON of the header in ``handle``, reading up to the pixel data only."""
    dataset = pydicom.dcmread(handle, stop_before_pixels=True)
    syntax = UID(str(dataset.file_meta.TransferSyntaxUID))
    if syntax.is_deflated:  # the raw handle is compressed: read it all
        handle.seek(0)
        return header_json(pydicom.dcmread(handle, defer_size=1024))
    result = header_json(dataset)
    pixel = _pixel_element(handle, syntax, dataset)
    if pixel is not None:
        tag, vr = pixel
        result[f"{tag:08X}"] = {"vr": vr, "BulkDataURI": f"bulk:{tag:08X}"}
    return result


def _pixel_element(handle: BinaryIO, syntax: UID, dataset: Any) -> tuple[int, str] | None:
    raw = handle.read(6)
    if len(raw) < 6:
        return None
    group, elem = struct.unpack("<HH" if syntax.is_little_endian else ">HH", raw[:4])
    tag = (group << 16) | elem
    if tag not in PIXEL_DATA_TAGS:
        return None
    vr = raw[4:6].decode("ascii", "replace")
    if syntax.is_implicit_VR or vr not in ("OB", "OW", "OF", "OD"):
        vr = "OW" if int(dataset.get("BitsAllocated") or 8) > 8 else "OB"
    return tag, vr


class SeriesMetadata:
    """Per-instance headers (catalog) and assembled series arrays (memory, disk)."""

    def __init__(
        self,
        catalog: Catalog,
        storage: BlobStorage,
        cache_dir: Path,
        *,
        memory_bytes: int = 256 * 1024**2,
    ) -> None:
        self.catalog = catalog
        self.storage = storage
        self.cache_dir = cache_dir
        self.memory_bytes = memory_bytes
        self._memory: OrderedDict[str, tuple[str, bytes]] = OrderedDict()
        self._memory_used = 0
        self._lock = threading.Lock()

    # -- headers --------------------------------------------------------------------------
    def headers(self, instances: Sequence[StoredInstance]) -> dict[str, JsonObject]:
        """Header JSON (``bulk:`` placeholders) by SOP Instance UID; fills the catalog cache."""
        cached = self.catalog.header_json_of([i.sop_instance_uid for i in instances])
        result: dict[str, JsonObject] = {}
        computed: dict[str, str] = {}
        for instance in instances:
            text = cached.get(instance.sop_instance_uid)
            if text is None:
                header = self._read(instance)
                if header is None:  # unreadable: the catalog's values, never cached
                    result[instance.sop_instance_uid] = catalogued_header(instance)
                    continue
                computed[instance.sop_instance_uid] = json.dumps(header, separators=(",", ":"))
                result[instance.sop_instance_uid] = header
            else:
                result[instance.sop_instance_uid] = json.loads(text)
        if computed:
            self.catalog.set_header_jsons(computed)
            log.debug("cached instance headers", extra={"count": len(computed)})
        return result

    def _read(self, instance: StoredInstance) -> JsonObject | None:
        """The instance's header, or None (logged) where pydicom cannot read it at all;
        storage errors are raised (a missing file is no property of the data)."""
        with self.storage.open(instance.blob_key) as handle:
            try:
                return read_header(handle)
            except OSError:
                raise
            except Exception as exc:
                log.warning(
                    "instance header unreadable; its catalogued values are served",
                    extra={"sop_instance_uid": instance.sop_instance_uid, "error": repr(exc)[:200]},
                )
                return None

    def representative_headers(
        self, level: str, uids: Sequence[str], scope: Scope = None
    ) -> dict[str, JsonObject]:
        """One instance's header per study (``level="study"``) or series, by their UID,
        taken from a series of ``scope`` (None: any series).

        QIDO-RS answers ``includefield`` for attributes the catalog does not hold from
        these: study and series attributes are the same in every instance.
        """
        if not uids:
            return {}
        in_scope = series_in_scope(scope)
        key = Series.study_instance_uid if level == "study" else Instance.series_instance_uid
        query = (
            select(key.label("key"), func.min(Instance.sop_instance_uid).label("sop"))
            .join(Series, Series.series_instance_uid == Instance.series_instance_uid)
            .where(key.in_(list(uids)), *([] if in_scope is None else [in_scope]))
            .group_by(key)
        )
        with self.catalog.engine.connect() as conn:
            chosen = {row.key: row.sop for row in conn.execute(query)}
        instances = [self.catalog.instance(sop) for sop in chosen.values()]
        headers = self.headers(instances)
        return {key_uid: headers[sop] for key_uid, sop in chosen.items()}

    def instance_json(self, instance: StoredInstance) -> bytes:
        """One instance's metadata as a JSON array (relative BulkDataURIs)."""
        header = self.headers([instance])[instance.sop_instance_uid]
        return json.dumps([with_relative_uris(header, instance)]).encode()

    # -- series ---------------------------------------------------------------------------
    def series_json(self, series_uid: str, instances: Sequence[StoredInstance]) -> bytes:
        """The series' metadata as a JSON array (relative BulkDataURIs)."""
        fingerprint = _fingerprint(instances)
        with self._lock:
            hit = self._memory.get(series_uid)
            if hit is not None and hit[0] == fingerprint:
                self._memory.move_to_end(series_uid)
                return hit[1]
        payload = self._read_disk(series_uid, fingerprint)
        if payload is None:
            headers = self.headers(instances)
            objects = [with_relative_uris(headers[i.sop_instance_uid], i) for i in instances]
            payload = json.dumps(objects).encode()
            self._write_disk(series_uid, fingerprint, payload)
        self._remember(series_uid, fingerprint, payload)
        return payload

    def invalidate(self, series_uids: Sequence[str]) -> None:
        """Forget the cached arrays of ``series_uids`` (deleted or changed series)."""
        with self._lock:
            for uid in series_uids:
                entry = self._memory.pop(uid, None)
                if entry is not None:
                    self._memory_used -= len(entry[1])
        for uid in series_uids:
            for path in self.cache_dir.glob(f"{uid}_*.json"):
                path.unlink(missing_ok=True)

    def _remember(self, series_uid: str, fingerprint: str, payload: bytes) -> None:
        if len(payload) > self.memory_bytes:
            return
        with self._lock:
            old = self._memory.pop(series_uid, None)
            if old is not None:
                self._memory_used -= len(old[1])
            self._memory[series_uid] = (fingerprint, payload)
            self._memory_used += len(payload)
            while self._memory_used > self.memory_bytes:
                _, (_, evicted) = self._memory.popitem(last=False)
                self._memory_used -= len(evicted)

    def _path(self, series_uid: str, fingerprint: str) -> Path:
        # "_" cannot occur in a UID: series 1.2.3 never matches the files of 1.2.3.4.
        return self.cache_dir / f"{series_uid}_{fingerprint}.json"

    def _read_disk(self, series_uid: str, fingerprint: str) -> bytes | None:
        try:
            return self._path(series_uid, fingerprint).read_bytes()
        except OSError:
            return None

    def _write_disk(self, series_uid: str, fingerprint: str, payload: bytes) -> None:
        """Atomically replace the series' file; a failure only costs a recompute later."""
        tmp: str | None = None
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            for stale in self.cache_dir.glob(f"{series_uid}_*.json"):
                stale.unlink(missing_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.cache_dir, suffix=".tmp")
            with os.fdopen(fd, "wb") as handle:
                handle.write(payload)
            os.replace(tmp, self._path(series_uid, fingerprint))
        except OSError as exc:
            log.warning("series metadata not cached on disk", extra={"error": str(exc)})
            if tmp is not None:
                with contextlib.suppress(OSError):
                    Path(tmp).unlink(missing_ok=True)


def _fingerprint(instances: Sequence[StoredInstance]) -> str:
    digest = hashlib.sha256()
    for instance in sorted(instances, key=lambda i: i.sop_instance_uid):
        digest.update(f"{instance.sop_instance_uid}:{instance.blob_key}\n".encode())
    return digest.hexdigest()[:24]
