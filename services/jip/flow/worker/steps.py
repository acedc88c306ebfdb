"""The three steps every workflow is made of, free of Airflow: get-input, run, put-output.

DAG tasks (:mod:`jip.flow.worker.tasks`), the Kubernetes stage containers
(:mod:`jip.flow.worker.stage`) and `jip operator test` call these, so the steps are tested
without a scheduler. Each task instance works in a folder of its own,
``<work_dir>/<run_id>/<series>/<step>/{input,output}``; mapped instances never share
one.

put-output sends DICOM results to the store with STOW-RS and every other file to the
result store under ``runs/<run_id>/<series>/<file>`` (the series folder the operator
wrote it in), and records each in the flow's results table. Files go straight to the
result store where the caller holds its credentials (Airflow's workers), else through
the flow API (``PUT /api/flow/runs/{run}/files/{name}``; operator pods, which never get
them). DICOM results are recorded
*before* they are stored, so an auto-rule never sees a result series it cannot yet tell
from new data.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom

from jip.flow.result_keys import result_key, safe_segment
from jip.flow.schema import ResultKind
from jip.flow.worker.api_client import JipClient
from jip.flow.worker.runner import (
    LogSink,
    OperatorJob,
    OperatorOutcome,
    OperatorRunner,
    check_outcome,
)
from jip.store import BlobStorage, Catalog

log = logging.getLogger(__name__)

STOW_BATCH = 64  # instances per STOW-RS request


@dataclass(frozen=True)
class StepDirs:
    """The folders of one step of one series of one run."""

    root: Path

    @property
    def input_dir(self) -> Path:
        return self.root / "input"

    @property
    def output_dir(self) -> Path:
        return self.root / "output"


def step_dirs(work_dir: Path, run_id: str, series_uid: str, step: str) -> StepDirs:
    return StepDirs(work_dir / safe_segment(run_id) / safe_segment(series_uid) / safe_segment(step))


def run_work_dir(work_dir: Path, run_id: str) -> Path:
    return work_dir / safe_segment(run_id)


# -- get-input ----------------------------------------------------------------------------


def get_input(
    client: JipClient,
    series_uids: Sequence[str],
    input_dir: Path,
    *,
    studies: dict[str, str] | None = None,
) -> Path:
    """Fetch each series into ``input_dir/<SeriesInstanceUID>/`` (WADO-RS); a clean folder."""
    if input_dir.exists():
        shutil.rmtree(input_dir)  # a retried task starts from nothing
    input_dir.mkdir(parents=True)
    for uid in dict.fromkeys(series_uids):
        client.fetch_series(uid, input_dir, study_uid=(studies or {}).get(uid))
    return input_dir


def export_local(catalog: Catalog, storage: BlobStorage, series_uid: str, dest: Path) -> Path:
    """Copy a series out of this machine's store into ``dest/<series_uid>/`` (`jip operator
    test` on the site's machine; workflow tasks use :func:`get_input`)."""
    folder = dest / series_uid
    folder.mkdir(parents=True, exist_ok=True)
    for instance in catalog.instances_of_series(series_uid):
        target = folder / f"{instance.sop_instance_uid}.dcm"
        local = storage.local_path(instance.blob_key)
        if local is not None:
            shutil.copyfile(local, target)
        else:
            target.write_bytes(storage.read_bytes(instance.blob_key))
    return folder


# -- run ----------------------------------------------------------------------------------


def run_operator(runner: OperatorRunner, job: OperatorJob, log_line: LogSink) -> OperatorOutcome:
    """Run the job on a clean output folder; raise OperatorFailed unless it succeeded."""
    if job.output_dir.exists():
        shutil.rmtree(job.output_dir)
    job.output_dir.mkdir(parents=True)
    log.info(
        "operator starting",
        extra={"operator": job.operator, "runner": runner.name, "run_id": job.run_id},
    )
    outcome = runner.run(job, log_line)
    log.info(
        "operator ended",
        extra={
            "operator": job.operator,
            "exit_code": outcome.exit_code,
            "duration_s": round(outcome.duration_s, 2),
        },
    )
    check_outcome(outcome, job.operator, getattr(runner, "timeout_s", None))
    return outcome


# -- put-output ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _DicomFile:
    path: Path
    series_uid: str
    study_uid: str
    modality: str


def put_output(
    *,
    client: JipClient,
    results: BlobStorage | None,
    run_id: str,
    series_uid: str,
    operator: str,
    output_dir: Path,
) -> list[dict[str, Any]]:
    """Deliver everything under ``output_dir``; return the result records as stored.

    ``results`` None: files are uploaded through the flow API, which records them.
    """
    files = [p for p in sorted(output_dir.rglob("*")) if p.is_file() and not _hidden(p, output_dir)]
    dicom = [d for d in (_dicom_header(p) for p in files) if d is not None]
    dicom_paths = {d.path for d in dicom}
    records: list[dict[str, Any]] = []
    by_series: dict[str, list[_DicomFile]] = {}
    for item in dicom:
        by_series.setdefault(item.series_uid, []).append(item)
    if by_series:
        records += client.record_results(
            run_id,
            [
                _dicom_record(series_uid, operator, uid, items, output_dir)
                for uid, items in by_series.items()
            ],
        )
        for batch in _batches([d.path for d in dicom], STOW_BATCH):
            client.store_instances(batch)
    file_records: list[dict[str, Any]] = []
    uploaded: list[dict[str, Any]] = []
    for path in files:
        if path in dicom_paths:
            continue
        relative = path.relative_to(output_dir).as_posix()
        if "/" not in relative:  # a file at the top: file it under the task's series
            relative = f"{series_uid}/{relative}"
        if results is None:
            uploaded.append(
                client.upload_file(run_id, relative, path, series=series_uid, operator=operator)
            )
            continue
        key = result_key(run_id, relative)
        _upload(results, key, path)
        file_records.append(
            {
                "series_instance_uid": series_uid,
                "operator": operator,
                "kind": ResultKind.FILE.value,
                "key": key,
                "name": relative,
                "size_bytes": path.stat().st_size,
            }
        )
    records += uploaded + client.record_results(run_id, file_records)
    log.info(
        "output delivered",
        extra={"run_id": run_id, "dicom_series": len(by_series), "files": len(files) - len(dicom)},
    )
    return records


def _dicom_record(
    series_uid: str, operator: str, result_uid: str, items: list[_DicomFile], root: Path
) -> dict[str, Any]:
    first = items[0]
    return {
        "series_instance_uid": series_uid,
        "operator": operator,
        "kind": ResultKind.DICOM.value,
        "key": result_uid,
        "name": first.path.relative_to(root).as_posix() if len(items) == 1 else result_uid,
        "size_bytes": sum(i.path.stat().st_size for i in items),
        "result_series_uid": result_uid,
        "study_instance_uid": first.study_uid,
        "modality": first.modality,
    }


def _dicom_header(path: Path) -> _DicomFile | None:
    """The file's series if it is a DICOM Part 10 file (preamble + ``DICM``), else None."""
    with path.open("rb") as handle:
        head = handle.read(132)
    if len(head) < 132 or head[128:132] != b"DICM":
        return None
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return _DicomFile(
        path=path,
        series_uid=str(ds.SeriesInstanceUID),
        study_uid=str(ds.StudyInstanceUID),
        modality=str(ds.get("Modality", "")),
    )


def _upload(results: BlobStorage, key: str, path: Path) -> None:
    # move_in takes ownership of its source; hand it a copy so a retried task can
    # deliver the same output again. Next to the file when possible (a rename away).
    try:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
    except OSError:  # a read-only output folder (a pod's stage container)
        fd, name = tempfile.mkstemp(prefix="jip-upload-")
    os.close(fd)
    copy = Path(name)
    try:
        shutil.copyfile(path, copy)
        results.move_in(key, copy)
    finally:
        copy.unlink(missing_ok=True)


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _batches(items: Sequence[Path], size: int) -> Iterable[Sequence[Path]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
