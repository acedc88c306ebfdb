"""rtstruct-to-seg: each RT Structure Set series as a DICOM SEG on the image series it references.

Per RTSTRUCT series: find-source (its referenced image series; see
jip.flow.worker.sources) → rtstruct-to-seg (one operator step on the RTSTRUCT and its
image series; a pod on the cluster; the SEG to the store by STOW-RS, recorded as the
run's result). The SEG is then a series like any other:
seg-radiomics measures it, seg-to-nifti exports it, the viewers show it.
"""

from __future__ import annotations

from airflow.sdk import dag, task_group

from jip.flow.worker.operator_step import operator_step
from jip.flow.worker.sources import find_source
from jip.flow.worker.tasks import fan_out, workflow_params

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
        sources = find_source.override(task_id="find-source")(
            series_uid, operator=RTSTRUCT_TO_SEG, modalities=["RTSTRUCT"]
        )
        operator_step(series_uid, operator=RTSTRUCT_TO_SEG, version=VERSION, also=sources)

    fan_out(per_series)


rtstruct_to_seg()
