"""Voxel values for ``fed-stats`` jobs with ``parameters.source = "roi"``.

The harmonisation study compares ADC distributions per region, so a site must compute
on voxel values inside segmentations, not only on META's per-series fields. The port
:class:`ImageSource` says what the runner needs: per image series of the cohort, the
values inside each segment of the SEGs that reference it. :class:`StoredImages` answers
from this site's store: META finds the SEGs (``ReferencedSeriesInstanceUID``, within
the job's project, so a SEG the project cannot see is never read), the catalog and blob
storage give the instances, and ``jip_sdk.roi.segment_values`` (the roi-stats operator's
function) takes the values: a workflow and a federated job measure alike. Nothing here
decides what leaves: the runner's disclosure checks do.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from io import BytesIO
from typing import Protocol

import numpy as np
import pydicom
from jip_sdk import SdkError
from pydicom.dataset import Dataset

from jip.errors import Invalid
from jip.meta import MetaIndex, cohort_values
from jip.store import BlobStorage, Catalog

log = logging.getLogger(__name__)
BATCH = 500  # series UIDs per META query (a terms clause counts each value)

SegmentValues = dict[str, np.ndarray]
"""Per SegmentLabel (as the SEG writes it), the voxel values inside that segment."""


class ImageSource(Protocol):
    """Where a site's roi values come from."""

    def segment_values(self, series_uids: Sequence[str], project: str) -> dict[str, SegmentValues]:
        """Per series of ``series_uids`` that a SEG of ``project`` references: the
        real-world voxel values inside each of its segments. Series without a SEG are
        left out."""
        ...


class StoredImages:
    """:class:`ImageSource` on this site's store (see the module docstring)."""

    def __init__(self, catalog: Catalog, storage: BlobStorage, index: MetaIndex) -> None:
        self.catalog, self.storage, self.index = catalog, storage, index

    def segment_values(self, series_uids: Sequence[str], project: str) -> dict[str, SegmentValues]:
        from jip_sdk import segment_values  # SimpleITK: only where a site measures

        found: dict[str, SegmentValues] = {}
        for series_uid, seg_uids in sorted(self.segs_of(series_uids, project).items()):
            images = self._datasets(series_uid)
            values: SegmentValues = {}
            for seg_uid in seg_uids:
                for seg in self._datasets(seg_uid):
                    try:
                        measured = segment_values(images, seg)
                    except (SdkError, ValueError) as exc:  # ValueError: undecodable pixels
                        raise Invalid(
                            f"SEG series {seg_uid} cannot be read on series {series_uid}: {exc}"
                        ) from exc
                    for label, x in measured.items():
                        if label in values:  # one SEG per label: the first (by UID) counts
                            log.warning(
                                "segment label repeated; later SEG ignored",
                                extra={"series_instance_uid": series_uid, "seg": seg_uid},
                            )
                            continue
                        values[label] = x
            found[series_uid] = values
        return found

    def segs_of(self, series_uids: Sequence[str], project: str) -> dict[str, list[str]]:
        """Per image series, the SEG series of ``project`` that reference it, sorted."""
        wanted = set(series_uids)
        segs: dict[str, list[str]] = {}
        ordered = sorted(wanted)
        for start in range(0, len(ordered), BATCH):
            query = {
                "bool": {
                    "filter": [
                        {"term": {"Modality": "SEG"}},
                        {"terms": {"ReferencedSeriesInstanceUID": ordered[start : start + BATCH]}},
                    ]
                }
            }
            docs = cohort_values(self.index, query, project, ["ReferencedSeriesInstanceUID"])
            for seg_uid, doc in docs.items():
                for referenced in doc.get("ReferencedSeriesInstanceUID") or []:
                    if referenced in wanted:
                        segs.setdefault(referenced, []).append(seg_uid)
        return {uid: sorted(set(found)) for uid, found in segs.items()}

    def _datasets(self, series_uid: str) -> list[Dataset]:
        return [
            pydicom.dcmread(BytesIO(self.storage.read_bytes(instance.blob_key)))
            for instance in self.catalog.instances_of_series(series_uid)
        ]
