"""convert-nifti: each image series as NIfTI (.nii.gz with a JSON sidecar) in the result store.

Per series, one operator step (one task: get-input → convert-nifti → put-output; an
operator pod on the cluster).
"""

from __future__ import annotations

from airflow.sdk import dag, task_group

from jip.flow.worker.operator_step import operator_step
from jip.flow.worker.tasks import fan_out, workflow_params

CONVERT_NIFTI = "convert-nifti"
VERSION = "0.1.0"


@dag(
    dag_id="convert-nifti",
    description="NIfTI volumes with JSON sidecars for research tools, in the result store.",
    schedule=None,
    catchup=False,
    tags=["jip", "conversion"],
    params=workflow_params(CONVERT_NIFTI),
)
def convert_nifti() -> None:
    @task_group(group_id="series")
    def per_series(series_uid: str) -> None:
        operator_step(series_uid, operator=CONVERT_NIFTI, version=VERSION)

    fan_out(per_series)


convert_nifti()
