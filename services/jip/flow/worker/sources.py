"""find-source: the image series a SEG or RT Structure Set was made on, for DAGs on such objects.

A SEG or RTSTRUCT from anywhere (an annotator's tool, a planning system, another site)
is measured or converted on its image series, which the run does not name: the object
does. In order: the operator's ``source_series_uid`` parameter; the series the object
names (SEG: ReferencedSeriesSequence; RTSTRUCT: ReferencedFrameOfReferenceSequence);
else the series holding the instances it was derived from (a SEG's frames, an RTSTRUCT's
contour images), asked of the store by QIDO-RS with the run's token, so a series
outside the run's projects is not found. The task fetches the object's series itself
(WADO-RS, into a folder it removes again), so it needs no folder another task staged
(Airflow's workers on the cluster share none). A DAG's operator step stages what this
returns beside the object with ``also``::

    sources = find_source.override(task_id="find-source")(series_uid, operator="radiomics")
    operator_step(series_uid, operator="radiomics", version="0.1.0", also=sources)
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import httpx
import pydicom
from airflow.sdk import get_current_context, task
from pydicom.dataset import Dataset

from jip.config import Settings
from jip.flow.worker import steps
from jip.flow.worker.api_client import JipClient
from jip.flow.worker.tasks import (
    SERIES_LABEL,
    run_id_of,
    run_studies,
    task_client,
    task_settings,
)

log = logging.getLogger(__name__)

DERIVED_MODALITIES = ("SEG", "RTSTRUCT")
MAX_LOOKUPS = 8  # referenced instances asked about when an object names no series
SERIES_UID_TAG = "0020000E"

# (study UID, SOP instance UIDs) -> the series holding them
InstanceLookup = Callable[[str, Sequence[str]], list[str]]


class NoSource(ValueError):
    """The object is not one this workflow takes, or does not say where it came from."""


def referenced_series(ds: Dataset) -> list[str]:
    """The series a SEG or RTSTRUCT names as its source, in order."""
    named = [str(item.SeriesInstanceUID) for item in ds.get("ReferencedSeriesSequence", [])]
    named += [
        str(series.SeriesInstanceUID)
        for frame in ds.get("ReferencedFrameOfReferenceSequence", [])
        for study in frame.get("RTReferencedStudySequence", [])
        for series in study.get("RTReferencedSeriesSequence", [])
    ]
    return list(dict.fromkeys(named))


def referenced_instances(ds: Dataset) -> list[str]:
    """SOP instances the object was derived from: a SEG's frames' source images (or its
    own SourceImageSequence), an RTSTRUCT's contour images."""
    groups = [
        *ds.get("SharedFunctionalGroupsSequence", []),
        *ds.get("PerFrameFunctionalGroupsSequence", []),
    ]
    sources = [
        source
        for group in groups
        for derivation in group.get("DerivationImageSequence", [])
        for source in derivation.get("SourceImageSequence", [])
    ]
    sources += list(ds.get("SourceImageSequence", []))
    sources += [
        image
        for roi in ds.get("ROIContourSequence", [])
        for contour in roi.get("ContourSequence", [])
        for image in contour.get("ContourImageSequence", [])
    ]
    return list(dict.fromkeys(str(s.ReferencedSOPInstanceUID) for s in sources))


def read_objects(folder: Path, modalities: Sequence[str]) -> list[Dataset]:
    """The headers of a staged series; NoSource unless every one has one of ``modalities``."""
    datasets: list[Dataset] = [
        pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(folder.glob("*.dcm"))
    ]
    if not datasets:
        raise NoSource(f"series {folder.name} has no instances in the store")
    found = sorted({str(ds.get("Modality", "")) for ds in datasets})
    if not set(found) <= set(modalities):
        raise NoSource(
            f"series {folder.name} has Modality {', '.join(found)}; this workflow takes "
            f"{' or '.join(modalities)} series (for image series, pick a workflow on images)"
        )
    return datasets


def series_of_instances(
    get: Callable[..., httpx.Response], study: str, sops: Iterable[str]
) -> list[str]:
    """The series holding these SOP instances, by QIDO-RS within the object's study."""
    wanted = list(sops)[:MAX_LOOKUPS]
    if not wanted:
        return []
    answer = get(
        f"/dicom-web/studies/{study}/instances",
        params={"SOPInstanceUID": ",".join(wanted), "includefield": "SeriesInstanceUID"},
        headers={"Accept": "application/dicom+json"},
    )
    answer.raise_for_status()
    uids = [
        str(value)
        for item in (answer.json() if answer.content else [])
        for value in item.get(SERIES_UID_TAG, {}).get("Value") or []
    ]
    return list(dict.fromkeys(uids))


def source_series(
    objects: Sequence[Dataset], lookup: InstanceLookup, override: str | None
) -> list[str]:
    """The image series to stage beside ``objects`` (one staged series' headers)."""
    if override:
        return [override]
    found: list[str] = []
    for ds in objects:
        named = referenced_series(ds) or lookup(str(ds.StudyInstanceUID), referenced_instances(ds))
        if not named:
            raise NoSource(
                f"{ds.get('Modality', 'object')} {ds.SOPInstanceUID} names no source series, and "
                "none of the instances it was derived from is in the store (or in the run's "
                "projects); set the operator's source_series_uid parameter"
            )
        found += named
    own = {str(ds.SeriesInstanceUID) for ds in objects}
    return [uid for uid in dict.fromkeys(found) if uid not in own]


@task(map_index_template=SERIES_LABEL)
def find_source(
    series_uid: str, *, operator: str, modalities: Sequence[str] = DERIVED_MODALITIES
) -> list[str]:
    """The image series of the SEG or RTSTRUCT series ``series_uid`` (see the module's text)."""
    context = get_current_context()
    context["jip_series"] = series_uid  # type: ignore[typeddict-unknown-key]
    settings = task_settings()
    override = (context["params"].get(operator) or {}).get("source_series_uid")
    with task_client(context, settings) as client:
        objects = _fetch_objects(client, context, settings, series_uid, modalities)
        headers = {"Authorization": f"Bearer {client.token}"} if client.token else {}
        with httpx.Client(
            base_url=client.base_url, headers=headers, timeout=client.timeout_s
        ) as http:
            sources = source_series(
                objects, lambda study, sops: series_of_instances(http.get, study, sops), override
            )
    log.info("series %s: source series %s", series_uid, ", ".join(sources))
    return sources


def _fetch_objects(
    client: JipClient, context: Any, settings: Settings, series_uid: str, modalities: Sequence[str]
) -> list[Dataset]:
    """The headers of the series, fetched into a folder of this task's own, then removed."""
    run_id = run_id_of(context)
    dirs = steps.step_dirs(settings.resolved_flow_work_dir, run_id, series_uid, "find-source")
    try:
        steps.get_input(client, [series_uid], dirs.input_dir, studies=run_studies(context))
        return read_objects(dirs.input_dir / series_uid, modalities)
    finally:
        shutil.rmtree(dirs.root, ignore_errors=True)
