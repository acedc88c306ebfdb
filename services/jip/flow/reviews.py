"""Human steps: a run waits at its ``annotate`` task until a person says it may go on.

The task (:class:`jip.flow.worker.operators.AwaitReviewOperator`) defers to a trigger
that asks ``GET /api/flow/runs/{run}/reviews/{series}`` until the series is marked done.
A person marks it done (``POST .../tasks/annotate/done``) or uploads a corrected SEG
(``POST .../tasks/annotate/seg``): the SEG is recorded as a result of the run (so
auto-rules never take it for new data), stored through ingest, and the series it
references is marked done with it; the run goes on with the corrected SEG.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence

import pydicom
from pydicom.errors import InvalidDicomError

from jip.errors import Conflict, Invalid
from jip.flow import records
from jip.flow.models import ResultIn, ReviewModel
from jip.flow.schema import ResultKind
from jip.flow.service import FlowService
from jip.store import Ingestor

log = logging.getLogger(__name__)

REVIEW_TASK = "annotate"
SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"


def review(service: FlowService, run_id: str, series_uid: str) -> ReviewModel:
    service.locate(run_id)  # NotFound for a run the caller may not see
    found = records.find_review(service.db, run_id, series_uid)
    if found is None:
        return ReviewModel(run_id=run_id, series_instance_uid=series_uid, done=False)
    return _model(found)


def mark_done(
    service: FlowService, run_id: str, series: Sequence[str] | None, *, user: str
) -> list[ReviewModel]:
    """Mark the review of the given series (default: all of the run's) done."""
    run_series = _open_run_series(service, run_id)
    chosen = list(series) if series else run_series
    unknown = [uid for uid in chosen if uid not in run_series]
    if unknown:
        raise Invalid(f"series not in run {run_id!r}: {', '.join(unknown)}")
    done = [records.mark_reviewed(service.db, run_id, uid, done_by=user) for uid in chosen]
    log.info("review marked done", extra={"run_id": run_id, "series": len(done), "user": user})
    return [_model(r) for r in done]


def upload_corrected_seg(
    service: FlowService, ingestor: Ingestor, run_id: str, files: Sequence[bytes], *, user: str
) -> list[ReviewModel]:
    """Store corrected SEGs and mark the series they segment done with them."""
    run_series = _open_run_series(service, run_id)
    checked = [_check_seg(data, run_series, run_id) for data in files]
    if not checked:
        raise Invalid("upload at least one corrected SEG file")
    service.add_results(
        run_id,
        [
            ResultIn(
                series_instance_uid=source,
                operator=REVIEW_TASK,
                kind=ResultKind.DICOM,
                key=str(ds.SeriesInstanceUID),
                name="corrected-seg.dcm",
                size_bytes=len(data),
                result_series_uid=str(ds.SeriesInstanceUID),
                study_instance_uid=str(ds.StudyInstanceUID),
                modality="SEG",
            )
            for data, ds, source in checked
        ],
    )
    reviews = []
    for data, ds, source in checked:
        ingestor.ingest_bytes(data)
        reviews.append(
            records.mark_reviewed(
                service.db, run_id, source, done_by=user, seg_series_uid=str(ds.SeriesInstanceUID)
            )
        )
    log.info("corrected SEG stored", extra={"run_id": run_id, "files": len(checked), "user": user})
    return [_model(r) for r in reviews]


def _check_seg(
    data: bytes, run_series: Sequence[str], run_id: str
) -> tuple[bytes, pydicom.Dataset, str]:
    try:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    except (InvalidDicomError, ValueError, EOFError) as exc:
        raise Invalid(f"the uploaded file is not DICOM: {exc}") from exc
    if str(ds.get("SOPClassUID", "")) != SEG_SOP_CLASS:
        raise Invalid(
            f"the uploaded instance {ds.get('SOPInstanceUID', '?')} is not a Segmentation "
            f"(SOP Class {ds.get('SOPClassUID', 'missing')})"
        )
    referenced = ds.get("ReferencedSeriesSequence") or []
    sources = [str(item.SeriesInstanceUID) for item in referenced if "SeriesInstanceUID" in item]
    source = next((uid for uid in sources if uid in run_series), None)
    if source is None:
        raise Invalid(
            f"SEG {ds.SOPInstanceUID} references series {', '.join(sources) or '(none)'}, "
            f"none of which is in run {run_id!r}"
        )
    return data, ds, source


def _open_run_series(service: FlowService, run_id: str) -> list[str]:
    """The run's series; Forbidden unless the caller may change the run, Conflict when
    it has already finished."""
    _, record = service.locate(run_id)
    service.require_writer(run_id, record)
    detail = service.run(run_id)
    if detail.state.finished:
        raise Conflict(f"run {run_id!r} has already finished ({detail.state})")
    if not any(t.task_id.rsplit(".", 1)[-1] == REVIEW_TASK for t in detail.tasks):
        raise Conflict(f"workflow {detail.dag_id!r} has no {REVIEW_TASK} step")
    return list(detail.series)


def _model(record: records.ReviewRecord) -> ReviewModel:
    return ReviewModel(
        run_id=record.run_id,
        series_instance_uid=record.series_instance_uid,
        done=True,
        seg_series_instance_uid=record.seg_series_uid,
        done_by=record.done_by,
        done_at=record.done_at,
    )
