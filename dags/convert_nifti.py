"""convert-nifti: each image series as NIfTI (.nii.gz with a JSON sidecar) in the result store."""

from __future__ import annotations

from airflow.sdk import dag, task_group

from jip.flow.worker.tasks import (
    fan_out,
    get_input,
    put_output,
    run_operator,
    workflow_params,
)

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
        staged = get_input.override(task_id="get-input")(series_uid)
        volume = run_operator.override(task_id=CONVERT_NIFTI)(
            staged, operator=CONVERT_NIFTI, version=VERSION
        )
        put_output.override(task_id="put-output")(volume)

    fan_out(per_series)


convert_nifti()
