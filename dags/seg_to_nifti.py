"""seg-to-nifti: each SEG series as a NIfTI label map, its image as NIfTI, and labels.json.

Per SEG series: get-seg → find-source (the image series it references; see
jip.flow.worker.sources) → convert-input (the SEG and its image) → seg-to-nifti →
put-output (``<SEG series>/labels.nii.gz``, ``image.nii.gz`` and ``labels.json`` in the
result store).
"""

from __future__ import annotations

from airflow.sdk import dag, task_group

from jip.flow.worker.sources import find_source
from jip.flow.worker.tasks import fan_out, get_input, put_output, run_operator, workflow_params

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
        seg = get_input.override(task_id="get-seg")(series_uid)
        sources = find_source.override(task_id="find-source")(
            seg, operator=SEG_TO_NIFTI, modalities=["SEG"]
        )
        staged = get_input.override(task_id="convert-input")(series_uid, also=sources)
        converted = run_operator.override(task_id=SEG_TO_NIFTI)(
            staged, operator=SEG_TO_NIFTI, version=VERSION
        )
        put_output.override(task_id="put-output")(converted)

    fan_out(per_series)


seg_to_nifti()
