"""seg-to-nifti: each SEG series as a NIfTI label map, its image as NIfTI, and labels.json.

Per SEG series: find-source (the image series it references; see
jip.flow.worker.sources) → seg-to-nifti (one operator step on the SEG and its image; a pod
on the cluster; ``<SEG series>/labels.nii.gz``, ``image.nii.gz`` and ``labels.json`` in
the result store).
"""

from __future__ import annotations

from airflow.sdk import dag, task_group

from jip.flow.worker.operator_step import operator_step
from jip.flow.worker.sources import find_source
from jip.flow.worker.tasks import fan_out, workflow_params

SEG_TO_NIFTI = "seg-to-nifti"
VERSION = "0.1.0"


@dag(
    dag_id="seg-to-nifti",
    description="NIfTI label maps (with the image and a labels table) of SEG series, in the result store.",
    schedule=None,
    catchup=False,
    tags=["jip", "conversion", "segmentation"],
    params=workflow_params(SEG_TO_NIFTI),
)
def seg_to_nifti() -> None:
    @task_group(group_id="series")
    def per_series(series_uid: str) -> None:
        sources = find_source.override(task_id="find-source")(
            series_uid, operator=SEG_TO_NIFTI, modalities=["SEG"]
        )
        operator_step(series_uid, operator=SEG_TO_NIFTI, version=VERSION, also=sources)

    fan_out(per_series)


seg_to_nifti()
