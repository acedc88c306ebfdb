"""rtstruct-to-seg: each RT Structure Set series as a DICOM SEG on the image series it references.

Per RTSTRUCT series: get-rtstruct → find-source (its referenced image series; see
jip.flow.worker.sources) → convert-input → rtstruct-to-seg → put-seg (the SEG to the store
by STOW-RS, recorded as the run's result). The SEG is then a series like any other:
seg-radiomics measures it, seg-to-nifti exports it, the viewers show it.
"""

from __future__ import annotations

from airflow.sdk import dag, task_group

from jip.flow.worker.sources import find_source
from jip.flow.worker.tasks import fan_out, get_input, put_output, run_operator, workflow_params

RTSTRUCT_TO_SEG = "rtstruct-to-seg"
VERSION = "0.1.0"


@dag(
    dag_id="rtstruct-to-seg",
    description="DICOM SEG (to the store) from the contours of RT Structure Sets, on their image series.",
    schedule=None,
    catchup=False,
    tags=["jip", "conversion", "segmentation"],
    params=workflow_params(RTSTRUCT_TO_SEG),
)
def rtstruct_to_seg() -> None:
    @task_group(group_id="series")
    def per_series(series_uid: str) -> None:
        structures = get_input.override(task_id="get-rtstruct")(series_uid)
        sources = find_source.override(task_id="find-source")(
            structures, operator=RTSTRUCT_TO_SEG, modalities=["RTSTRUCT"]
        )
        staged = get_input.override(task_id="convert-input")(series_uid, also=sources)
        seg = run_operator.override(task_id=RTSTRUCT_TO_SEG)(
            staged, operator=RTSTRUCT_TO_SEG, version=VERSION
        )
        put_output.override(task_id="put-seg")(seg)

    fan_out(per_series)


rtstruct_to_seg()
